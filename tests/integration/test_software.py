"""`slapgrid software` with the real zc.buildout: examples/hello from scratch, its instance
run offline against a master on 127.0.0.1, failures, a killed agent, destruction, locks.

The master of `run_software` is a small recorder of the five calls a software run makes;
the instance side talks HTTP to a real server answering with xml_marshaller documents.
"""

from __future__ import annotations

import fcntl
import functools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from xml_marshaller import xml_marshaller

from recording_server import Answer, RecordingServer
from slapgrid.node.buildout import BuildoutError, run_instance_buildout
from slapgrid.node.config import NodeConfig
from slapgrid.node.instance.partition import observe_partition
from slapgrid.node.safety import software_hash
from slapgrid.node.software.run import run_software
from slapgrid.slap.documents import STARTED, ComputerPartition, SoftwareRelease
from support.addresses import free_port
from support.configs import node_config
from support.waiting import wait_for

pytestmark = pytest.mark.integration

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello" / "software.cfg"
TINY = """\
[buildout]
parts = hello
[hello]
recipe = zc.buildout:debug
greeting = hi
"""


@dataclass
class Release:
    url: str
    requested_state: str = "available"


class Master:
    """Records the SLAP calls of a software run (a test double for the master)."""

    def __init__(self, *releases: Release) -> None:
        self.releases = list(releases)
        self.calls: list[tuple[str, str]] = []
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def computer(self) -> SimpleNamespace:
        return SimpleNamespace(software_releases=list(self.releases))

    def _record(self, call: str, url: str) -> None:
        with self._lock:
            self.calls.append((call, url))

    def building_software_release(self, url: str) -> None:
        self._record("building", url)

    def available_software_release(self, url: str) -> None:
        self._record("available", url)

    def destroyed_software_release(self, url: str) -> None:
        self._record("destroyed", url)

    def software_release_error(self, url: str, log: str) -> None:
        self._record("error", url)
        self.errors[url] = log


make_config = functools.partial(node_config, software_min_free_space=0, jobs=2)


def profile(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


def software_dir(config: NodeConfig, url: str) -> Path:
    return config.software_root / software_hash(url)


@pytest.fixture(scope="session")
def hello(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """examples/hello built once from an empty software root by `run_software`."""
    config = make_config(tmp_path_factory.mktemp("hello"))
    master = Master(Release(str(HELLO)))
    started = time.monotonic()
    code = run_software(config, master).status
    duration = time.monotonic() - started
    return SimpleNamespace(
        config=config,
        master=master,
        code=code,
        duration=duration,
        software=software_dir(config, str(HELLO)),
    )


def test_hello_builds_from_scratch_and_reports_in_order(hello: SimpleNamespace) -> None:
    assert hello.code == 0, hello.master.errors
    url = str(HELLO)
    assert hello.master.calls == [("building", url), ("available", url)]
    software = hello.software
    assert (software / ".completed").is_file()
    assert (software / "buildout.cfg").read_text().startswith(f"[buildout]\nextends = {url}\n")
    assert (software / "instance.cfg").is_file()
    assert "Installing instance-profile." in (software / ".slapgrid" / "build.log").read_text()
    # The pitfall: the PyPI egg is reachable from develop-eggs for offline instance runs.
    link = software / "develop-eggs" / "slapos.recipe.build.egg-link"
    target = Path(link.read_text().strip())
    assert target.parent == software / "eggs" and target.is_dir()
    print(f"\nexamples/hello built from scratch in {hello.duration:.1f} s")


def test_built_software_is_not_rebuilt_nor_reported(hello: SimpleNamespace) -> None:
    master = Master(Release(str(HELLO)))
    log = hello.software / ".slapgrid" / "build.log"
    before = log.stat().st_mtime_ns
    assert run_software(hello.config, master).status == 0
    assert master.calls == []
    assert log.stat().st_mtime_ns == before


def partition_document(computer_id: str, partition_id: str, parameters: dict) -> bytes:
    cls = type("ComputerPartition", (), {"__module__": "slapos.slap.slap"})
    partition = cls()
    partition.__dict__.update(
        _computer_id=computer_id,
        _partition_id=partition_id,
        _requested_state="started",
        _parameter_dict=parameters,
        _connection_dict={},
        _instance_guid=f"{computer_id}-{partition_id}",
    )
    return xml_marshaller.dumps(partition)


def write_partition_profile(
    partition: Path, software: Path, server_url: str, partition_id: str
) -> None:
    """P/buildout.cfg as the node agent writes it (reference §3.4): template + tail."""
    partition.mkdir(mode=0o750)
    partition.chmod(0o750)
    tail = textwrap.dedent(
        f"""
        [buildout]
        bin-directory = ${{buildout:directory}}/sbin
        offline = true

        [slap-connection]
        computer-id = COMP-TEST
        partition-id = {partition_id}
        server-url = {server_url}
        software-release-url = {HELLO}
        key-file =
        cert-file =
        requested-state = started
        """
    )
    text = (software / "instance.cfg").read_text() + "\n" + tail
    (partition / "buildout.cfg").write_text(text)
    (partition / "software_release").symlink_to(software)


def test_hello_instance_runs_offline_and_publishes(hello: SimpleNamespace, tmp_path: Path) -> None:
    port = free_port()
    parameters = {
        "ip_list": [("lo", "::1"), ("lo", "127.0.0.1")],
        "port": str(port),
        "instance_title": "Hello <test>",
    }
    config = make_config(tmp_path, software_root=hello.config.software_root)
    partition = config.instance_root / "slappart0"
    with RecordingServer(
        routes={
            "registerComputerPartition": Answer(
                body=partition_document("COMP-TEST", "slappart0", parameters)
            ),
            "setComputerPartitionConnectionXml": Answer(body=b"done"),
        }
    ) as master:
        write_partition_profile(partition, hello.software, master.url, "slappart0")
        result = run_instance_buildout(config, partition, hello.software)
    assert result.ok

    register, publish = master.requests
    assert register.method == "GET" and register.query == {
        "computer_reference": "COMP-TEST",
        "computer_partition_reference": "slappart0",
    }
    assert publish.method == "POST" and publish.path == "/setComputerPartitionConnectionXml"
    assert publish.headers["authorization"] == (
        "X-SlapPartition computer_id=COMP-TEST, computer_partition_id=slappart0"
    )
    assert publish.form["computer_id"] == "COMP-TEST"
    assert publish.form["computer_partition_id"] == "slappart0"
    assert publish.form["slave_reference"] == "None"
    url = f"http://127.0.0.1:{port}/"
    assert xml_marshaller.loads(publish.form["connection_xml"].encode()) == {"url": url}

    service = partition / "etc" / "service" / "hello-http"
    promise = partition / "etc" / "promise" / "check-hello-http"
    assert os.access(service, os.X_OK) and os.access(promise, os.X_OK)
    assert "Hello &lt;test&gt;" in (partition / "srv" / "www" / "index.html").read_text()
    # slapos.recipe.build (a PyPI egg of the software) served the offline instance run
    assert "recipe = slapos.recipe.build:mkdirectory" in (partition / ".installed.cfg").read_text()

    def promise_passes() -> bool:
        return subprocess.run([promise], capture_output=True).returncode == 0

    assert not promise_passes()
    server = subprocess.Popen([service], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(promise_passes, what="the promise to see the service answer")
    finally:
        server.terminate()
        server.wait(10)
    assert not promise_passes()


def test_without_develop_egg_links_offline_instances_miss_pypi_eggs(
    hello: SimpleNamespace, tmp_path: Path
) -> None:
    """The pitfall itself: zc.buildout 6 offline mode does not see pip-made eggs."""
    partition = tmp_path / "partition"
    partition.mkdir()
    (tmp_path / "no-links").mkdir()
    (partition / "buildout.cfg").write_text(
        textwrap.dedent(
            f"""
            [buildout]
            parts = directories
            eggs-directory = {hello.software / "eggs"}
            develop-eggs-directory = {tmp_path / "no-links"}
            offline = true
            [directories]
            recipe = slapos.recipe.build:mkdirectory
            data = ${{buildout:directory}}/data
            """
        )
    )
    config = make_config(tmp_path)
    with pytest.raises(BuildoutError) as failure:
        run_instance_buildout(config, partition, hello.software)
    assert "We don't have a distribution for slapos.recipe.build" in failure.value.output


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "bad-recipe.cfg",
            TINY.replace("zc.buildout:debug", "zc.buildout:nonexistent"),
            "Entry point ('zc.buildout', 'nonexistent') not found",
        ),
        ("syntax.cfg", "[buildout\nparts =\n", "File contains no section headers"),
        ("missing.cfg", None, "No such file or directory"),
    ],
)
def test_failing_software_is_reported_and_not_completed(
    tmp_path: Path, name: str, text: str | None, expected: str
) -> None:
    config = make_config(tmp_path)
    url = profile(tmp_path, name, text) if text is not None else str(tmp_path / name)
    good = profile(tmp_path, "good.cfg", TINY)
    master = Master(Release(url), Release(good))
    assert run_software(config, master).status == 1
    assert ("building", url) in master.calls and ("error", url) in master.calls
    assert ("available", url) not in master.calls
    assert expected in master.errors[url]
    assert not (software_dir(config, url) / ".completed").exists()
    # the other release is not held back by the failure
    assert ("available", good) in master.calls
    assert (software_dir(config, good) / ".completed").exists()


def test_destroy_removes_read_only_directory_and_reports(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    url = profile(tmp_path, "tiny.cfg", TINY)
    assert run_software(config, Master(Release(url))).status == 0
    directory = software_dir(config, url)
    locked = directory / "parts" / "read-only"
    locked.mkdir()
    (locked / "file").write_text("x")
    locked.chmod(0o500)
    master = Master(Release(url, "destroyed"))
    assert run_software(config, master).status == 0
    assert not directory.exists()
    assert master.calls == [("destroyed", url)]


def test_destroy_is_refused_while_a_partition_uses_the_software(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    url = profile(tmp_path, "tiny.cfg", TINY)
    assert run_software(config, Master(Release(url))).status == 0
    partition = config.instance_root / "slappart3"
    partition.mkdir()
    (partition / "software_release").symlink_to(software_dir(config, url))
    master = Master(Release(url, "destroyed"))
    assert run_software(config, master).status == 1
    assert software_dir(config, url).is_dir()
    assert master.calls == [("error", url)]
    assert "slappart3" in master.errors[url]


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


def test_only_sr_filters_by_url_or_hash(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    first = profile(tmp_path, "first.cfg", TINY)
    second = profile(tmp_path, "second.cfg", TINY)
    master = Master(Release(first), Release(second))
    assert run_software(config, master, only_sr=[software_hash(second)]).status == 0
    assert master.calls == [("building", second), ("available", second)]
    assert not software_dir(config, first).exists()


def test_not_enough_space_names_the_option(tmp_path: Path) -> None:
    config = make_config(tmp_path, software_min_free_space=1 << 60)
    url = profile(tmp_path, "tiny.cfg", TINY)
    master = Master(Release(url))
    assert run_software(config, master).status == 1
    assert "software_min_free_space" in master.errors[url]
    assert master.calls == [("error", url)]


def test_noop_run_with_five_built_software_releases(tmp_path: Path) -> None:
    config = make_config(tmp_path, jobs=5)
    urls = [profile(tmp_path, f"sr{index}.cfg", TINY) for index in range(5)]
    assert run_software(config, Master(*map(Release, urls))).status == 0
    master = Master(*map(Release, urls))
    started = time.monotonic()
    assert run_software(config, master).status == 0
    elapsed = time.monotonic() - started
    assert master.calls == []
    assert elapsed < 1.0
    print(f"\nno-op run_software with 5 built SRs: {elapsed * 1000:.1f} ms")
