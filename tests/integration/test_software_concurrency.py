"""`slapgrid software` against other runs: locks, partitions waiting for a build, a killed
agent."""

from __future__ import annotations

import fcntl
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from recording_server import Answer, RecordingServer
from slapgrid.node.instance.partition import observe_partition
from slapgrid.node.safety import software_hash
from slapgrid.node.software.run import run_software
from slapgrid.slap.documents import STARTED, ComputerPartition, SoftwareRelease
from support.software_releases import TINY, Master, Release, make_config, profile, software_dir
from support.waiting import wait_for

pytestmark = pytest.mark.integration


def slow_profile(tmp_path: Path, delay: float) -> tuple[str, RecordingServer]:
    """A profile whose build waits `delay` s for an extended profile served over HTTP."""
    served = []

    def slow(_request):
        if not served:
            time.sleep(delay)
        served.append(1)
        return Answer(body=TINY.encode(), content_type="text/plain")

    server = RecordingServer(routes={"base.cfg": slow})
    return profile(tmp_path, "slow.cfg", f"[buildout]\nextends = {server.url}base.cfg\n"), server


def test_concurrent_runs_build_one_software_once(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    url, server = slow_profile(tmp_path, 2.0)
    masters = [Master(Release(url)), Master(Release(url))]
    codes: list[int] = []
    with server:
        runs = [
            threading.Thread(target=lambda m=master: codes.append(run_software(config, m).status))
            for master in masters
        ]
        runs[0].start()
        # the first run fetches the profile once it holds the lock, and waits there
        wait_for(lambda: server.requests, what="the first run to build")
        runs[1].start()
        for run in runs:
            run.join(60)
    assert codes == [0, 0]
    assert masters[0].calls == [("building", url), ("available", url)]
    assert masters[1].calls == []  # waited for the lock, then found the build done


def test_a_partition_sees_its_software_being_built(tmp_path: Path) -> None:
    """While a run builds an SR, its partitions wait for it instead of failing."""
    config = make_config(tmp_path)
    url, server = slow_profile(tmp_path, 2.0)
    (config.instance_root / "slappart0").mkdir(mode=0o750)
    partition = ComputerPartition("C", "slappart0", STARTED, SoftwareRelease(url))
    assert not observe_partition(config, partition).software_building
    with server:
        build = threading.Thread(target=run_software, args=(config, Master(Release(url))))
        build.start()
        wait_for(
            lambda: observe_partition(config, partition).software_building, what="the build seen"
        )
        build.join(60)
    seen = observe_partition(config, partition)
    assert (seen.software_built, seen.software_building) == (True, False)


AGENT = """\
import sys, threading
from pathlib import Path
from types import SimpleNamespace
from slapgrid.node.config import NodeConfig
from slapgrid.node.software.run import run_software

class Master:
    def computer(self):
        release = SimpleNamespace(url=sys.argv[3], requested_state="available")
        return SimpleNamespace(software_releases=[release])
    def __getattr__(self, name):
        return lambda *args: print(name, flush=True)

config = NodeConfig(master_url="http://127.0.0.1:9/", computer_id="C",
                    instance_root=Path(sys.argv[1]), software_root=Path(sys.argv[2]),
                    software_min_free_space=0)
sys.exit(run_software(config, Master()).status)
"""


def test_rerun_after_agent_killed_mid_build_converges(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    url, server = slow_profile(tmp_path, 3.0)
    agent_script = profile(tmp_path, "agent.py", AGENT)
    directory = software_dir(config, url)
    with server:
        roots = [str(config.instance_root), str(config.software_root)]
        agent = subprocess.Popen(
            [sys.executable, agent_script, *roots, url], stdout=subprocess.PIPE, text=True
        )
        wait_for(lambda: server.requests, 30, what="the build to start")
        orphans = psutil.Process(agent.pid).children(recursive=True)
        assert orphans, "the agent had no buildout child to orphan"
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        assert agent.stdout is not None
        assert agent.stdout.read().split() == ["building_software_release"]
        lock = config.software_root / ".slapgrid" / "locks" / f"{software_hash(url)}.lock"
        with lock.open() as handle, pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the orphan still holds it
        master = Master(Release(url))
        assert run_software(config, master).status == 0  # waits for the orphaned buildout first
    assert master.calls == [("building", url), ("available", url)]
    assert (directory / ".completed").exists()
    assert (directory / ".installed.cfg").exists()
    assert not any(_alive(process) for process in orphans)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
