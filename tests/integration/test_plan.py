"""Plan, explain and retry: `--dry-run` changes nothing anywhere; failures back off."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from nodes import Node
from slapgrid.cli.main import main
from slapgrid.node.state import StateStore

pytestmark = pytest.mark.integration


def tree_fingerprint(root: Path) -> dict[str, tuple[int, float, str]]:
    """Every path under `root` with its mode, mtime and content digest."""
    result = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = ""
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        result[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, digest)
    return result


def cli(node: Node, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    flags = [
        "--master-url",
        node.config.master_url,
        "--computer-id",
        node.config.computer_id,
        "--instance-root",
        str(node.config.instance_root),
        "--software-root",
        str(node.config.software_root),
    ]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit) as exited:
            main([*argv, *flags])
    finally:  # main() logs to this test's stderr: give the master thread its handlers back
        root.handlers[:], root.level = handlers, level
    return exited.value.code, capsys.readouterr().out


def test_dry_runs_change_no_file_and_no_master_state(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    node.request("planned")
    node.request("to-destroy")
    assert node.instance() == 0
    node.request("to-destroy", state="destroyed")
    node.request("planned", port="18944")
    for title in ("planned", "to-destroy"):  # out of STARTING: supervisord logged it
        node.processes(node.partition(title))
    files_before = tree_fingerprint(node.root / "instance")
    software_before = tree_fingerprint(node.root / "software")
    master_before = node.store.snapshot()

    code, plan = cli(node, capsys, "plan", "--json")
    assert code == 0
    reasons = {(entry["target"], entry["action"]): entry["reason"] for entry in json.loads(plan)}
    planned, destroyed = node.partition("planned"), node.partition("to-destroy")
    assert reasons[(planned, "deploy")].startswith("parameters changed: timestamp")
    assert reasons[(destroyed, "stop")].startswith("requested destroyed")
    assert reasons[(destroyed, "destroy")] == "requested destroyed"
    assert any(reason == "already built" for (_, kind), reason in reasons.items() if kind == "skip")
    for command in ("software", "instance", "report"):
        code, output = cli(node, capsys, command, "--dry-run")
        assert code == 0 and "nothing was changed" in output

    assert tree_fingerprint(node.root / "instance") == files_before
    assert tree_fingerprint(node.root / "software") == software_before
    assert node.store.snapshot() == master_before


def test_failed_partition_is_retried_on_the_back_off_schedule(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """Counted on the master's own access log of error reports."""
    node.request("planned", port="not-a-port")
    pid = node.partition("planned")
    caplog.set_level(logging.INFO, logger="slapgrid.master.access")

    def error_reports() -> int:
        return sum("POST /softwareInstanceError" in r.getMessage() for r in caplog.records)

    assert node.instance(only=[pid]) == 1
    assert error_reports() == 1
    for _ in range(3):  # within the 10 s back-off: waits, reports nothing
        assert node.instance(only=[pid]) == 0
    assert error_reports() == 1

    state = StateStore(node.config.instance_root)
    failure = state.failures()[pid]
    assert failure.attempts == 1
    state_file = node.config.instance_root / ".slapgrid" / "state.json"
    data = json.loads(state_file.read_text())
    data["failures"][pid]["at"] -= 11  # the back-off has elapsed
    state_file.write_text(json.dumps(data))
    assert node.instance(only=[pid]) == 1
    assert error_reports() == 2
    assert StateStore(node.config.instance_root).failures()[pid].attempts == 2
    assert node.instance(only=[pid]) == 0  # now 20 s of back-off
    assert error_reports() == 2
