"""`slapgrid node` plumbing: its configuration, status file and summary, waker and metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from slapgrid.cli.render import summary_line
from slapgrid.errors import ConfigError
from slapgrid.node.config import NodeConfig, load_node_config
from slapgrid.node.daemon.metrics import Metrics
from slapgrid.node.daemon.schedule import Intervals
from slapgrid.node.daemon.signals import Waker
from slapgrid.node.daemon.status_file import location
from support.clock import T0


def config(tmp_path: Path, **options: str) -> NodeConfig:
    required = {
        "master_url": "http://127.0.0.1:1/",
        "computer_id": "COMP-1",
        "instance_root": str(tmp_path),
        "software_root": str(tmp_path),
    }
    return load_node_config(None, {**required, **options}, check_paths=False)


def test_daemon_options_are_checked_when_the_configuration_loads(tmp_path: Path) -> None:
    assert Intervals.of(config(tmp_path)) == Intervals()
    parsed = Intervals.of(
        config(tmp_path, instance_interval="5", report_interval="120", software_interval="0")
    )
    assert (parsed.instance, parsed.report, parsed.software) == (5, 120, 0)
    for option, value in (("instance_interval", "0"), ("poll_interval", "-1")):
        with pytest.raises(ConfigError, match=option):
            config(tmp_path, **{option: value})
    with pytest.raises(ConfigError, match="report_interval"):
        config(tmp_path, report_interval="hourly")
    assert location(config(tmp_path)) == tmp_path / ".slapgrid" / "daemon.json"
    assert location(config(tmp_path, status_file="/run/s.json")) == Path("/run/s.json")
    assert config(tmp_path).metrics_port is None
    assert config(tmp_path, metrics_port="9101").metrics_port == 9101
    with pytest.raises(ConfigError, match="metrics_port"):
        config(tmp_path, metrics_port="70000")


def test_summary_line() -> None:
    status = {
        "state": "running",
        "watch": {"mode": "long-poll"},
        "running": {"partitions": {"job": "instance", "since": T0 - 3}},
        "next": {"report": T0 + 60, "software": None, "instance": T0 - 1},
        "master": {"errors": 2},
    }
    assert summary_line(status, T0) == (
        "running, watch: long-poll; partitions: instance for 3 s; next report in 60 s; "
        "master unreachable (2 errors)"
    )


def test_slapgrid_status_imports_no_agent_loop_nor_runs() -> None:
    """`slapgrid status` stays quick: reading the status file needs none of the agent."""
    code = "import sys, slapgrid.node.status; print(' '.join(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "slapgrid.node.daemon.status_file" in loaded
    heavy = ("slapgrid.node.daemon.loop", "slapgrid.node.instance", "slapgrid.node.software")
    assert [name for name in loaded if name.startswith(heavy)] == []


def test_waker_wakes_on_poke_and_reports_signals() -> None:
    waker = Waker()
    try:
        assert waker.wait(0.01) == []
        threading.Timer(0.05, waker.poke).start()
        assert waker.wait(5) == []  # woken (well before the timeout), no signal
        with waker.signals((signal.SIGHUP,)):
            os.kill(os.getpid(), signal.SIGHUP)
            assert waker.wait(5) == [signal.SIGHUP]
    finally:
        waker.close()


def test_metrics_exposition() -> None:
    metrics = Metrics()
    metrics.run_finished("instance", "ok", 1.5, T0)
    metrics.partition_states({"started": 3, "free": 1})
    text = metrics.text()
    assert 'slapgrid_node_runs_total{job="instance",result="ok"} 1.0' in text
    assert 'slapgrid_node_partitions{state="started"} 3.0' in text
    assert 'slapgrid_node_run_duration_seconds_count{job="instance"} 1.0' in text
    assert "process_open_fds" in text  # the process collector, for leak hunting
