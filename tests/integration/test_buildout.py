"""Bootstrapping and running buildout, and the children rules behind it, with real processes.

Software builds use the real zc.buildout on a profile whose only part uses the recipe
zc.buildout ships (`zc.buildout:debug`), so nothing is downloaded. Where the exact command
line or environment matters, `bin/buildout` is replaced by a shell script that records
what it was given.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from slapgrid.node import process
from slapgrid.node.buildout import (
    SKIPPED_MARKER,
    BuildoutError,
    build_software,
    run_instance_buildout,
)
from slapgrid.node.config import NodeConfig
from slapgrid.node.identity import home_of
from support.configs import node_config

pytestmark = pytest.mark.integration

TINY = "[buildout]\nparts = hello\n[hello]\nrecipe = zc.buildout:debug\ngreeting = hi\n"
RECORDER = """#!/bin/sh
# stands in for buildout: records how it was started
{{
  echo "args: $*"
  echo "cwd: $(pwd)"
  echo "home: $HOME"
  echo "root: $SLAPGRID_INSTANCE_ROOT"
  echo "nousersite: $PYTHONNOUSERSITE"
  echo "lang: ${{LANG:-unset}}"
  echo "umask: $(umask)"
  if read -r line; then echo "stdin: open"; else echo "stdin: eof"; fi
}} > {record}
"""


def make_config(root: Path, **changes: object) -> NodeConfig:
    """Both roots at `root`: these tests call buildout on directories they lay out."""
    return node_config(root, instance_root=root, software_root=root, **changes)


@pytest.fixture
def software(tmp_path: Path) -> Path:
    (tmp_path / "tiny.cfg").write_text(TINY)
    directory = tmp_path / "software"
    directory.mkdir()
    (directory / "extends-cache").mkdir()
    (directory / "buildout.cfg").write_text(f"[buildout]\nextends = {tmp_path / 'tiny.cfg'}\n")
    return directory


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_first_build_bootstraps_then_builds(software: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    log_file = tmp_path / "build.log"
    result = build_software(make_config(tmp_path), software, output=lines.append, log_file=log_file)
    assert result.ok
    assert any(line.startswith("Generated script") for line in lines)  # the bootstrap
    assert "Installing hello." in lines and "  greeting='hi'" in lines
    assert log_file.read_text().splitlines() == lines
    assert "Installing hello." in result.tail
    assert (software / ".installed.cfg").exists()
    assert not (software / "bin" / SKIPPED_MARKER).exists()


def test_existing_buildout_is_reused(software: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    build_software(config, software)
    script = software / "bin" / "buildout"
    before = script.stat().st_mtime_ns
    lines: list[str] = []
    build_software(config, software, output=lines.append)
    assert "Updating hello." in lines
    assert not any(line.startswith("Generated script") for line in lines)
    assert script.stat().st_mtime_ns == before
    assert not (software / "bin" / SKIPPED_MARKER).exists()


def test_failure_after_skipped_bootstrap_makes_next_run_bootstrap(
    software: Path, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    build_software(config, software)
    profile = tmp_path / "tiny.cfg"
    profile.write_text(TINY.replace("zc.buildout:debug", "zc.buildout:nonexistent"))
    with pytest.raises(BuildoutError) as failure:
        build_software(config, software)
    assert str(failure.value) == f"buildout failed in {software} (exit code 1)"
    assert "Entry point ('zc.buildout', 'nonexistent') not found" in failure.value.output
    assert failure.value.report.startswith(str(failure.value) + "\n")
    assert (software / "bin" / SKIPPED_MARKER).exists()

    # a broken bin/buildout works again only if the marker makes the next run bootstrap
    (software / "bin" / "buildout").write_text("#!/bin/false\n")
    profile.write_text(TINY)
    assert build_software(config, software).ok
    assert not (software / "bin" / SKIPPED_MARKER).exists()


@pytest.mark.parametrize("force", [False, True])
def test_software_buildout_runs_with_the_shebang_interpreter(
    software: Path, tmp_path: Path, force: bool
) -> None:
    config = make_config(tmp_path)
    build_software(config, software)
    wrapper = executable(
        tmp_path / "wrapper-python",
        f'#!/bin/sh\necho "wrapped: $*"\nexec {sys.executable} "$@"\n',
    )
    script = software / "bin" / "buildout"
    body = script.read_text().split("\n", 1)[1]
    script.write_text(f"#!{wrapper}\n{body}")
    lines: list[str] = []
    build_software(config, software, force=force, output=lines.append)
    newest = [] if force else ["-N"]
    expected = [
        "wrapped:",
        str(script),
        "-U",
        f"buildout:extends-cache={software / 'extends-cache'}",
        f"buildout:directory={software}",
        *newest,
        "-c",
        str(software / "buildout.cfg"),
    ]
    assert lines[0].split() == expected


@pytest.fixture
def partition(tmp_path: Path) -> Path:
    directory = tmp_path / "instance" / "slappart0"
    directory.mkdir(parents=True, mode=0o750)
    return directory


def test_instance_buildout_command_and_environment(
    tmp_path: Path, partition: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    record = tmp_path / "record"
    software = tmp_path / "software"
    executable(software / "bin" / "buildout", RECORDER.format(record=record))
    config = make_config(tmp_path / "instance", buildout_debug=True)
    result = run_instance_buildout(config, partition, software)
    assert result.ok
    assert record.read_text().splitlines() == [
        "args: -D -U",  # buildout.cfg of the cwd, no -c
        f"cwd: {partition}",
        f"home: {partition}",
        f"root: {tmp_path / 'instance'}",
        "nousersite: true",
        "lang: unset",
        "umask: 0027",
        "stdin: eof",  # debug mode shares the agent's stdin (pytest's is empty)
    ]
    assert result.tail == process.NOT_CAPTURED  # debug mode: the output is the terminal's

    run_instance_buildout(make_config(tmp_path / "instance"), partition, software)
    recorded = record.read_text().splitlines()
    assert recorded[0] == "args: -U" and recorded[-1] == "stdin: eof"


def test_custom_bootstrap_script_provides_the_partition_buildout(
    tmp_path: Path, partition: Path
) -> None:
    software = tmp_path / "software"
    record = tmp_path / "record"
    executable(software / "bin" / "buildout", f"#!/bin/sh\necho software buildout > {record}\n")
    recorder = RECORDER.format(record=record).replace("'", "'\\''")
    executable(
        software / "bin" / "bootstrap-instance",
        "#!/bin/sh\n"
        'echo "bootstrap home: $HOME"\n'
        "mkdir -p sbin\n"
        f"printf '%s' '{recorder}' > sbin/buildout\n"
        "chmod +x sbin/buildout\n",
    )
    lines: list[str] = []
    run_instance_buildout(make_config(tmp_path), partition, software, output=lines.append)
    assert lines[0] == f"bootstrap home: {home_of(partition)}"
    assert record.read_text().splitlines()[0] == "args: -U"

    executable(software / "bin" / "bootstrap-other", "#!/bin/sh\n")
    with pytest.raises(BuildoutError, match="several bootstrap scripts"):
        run_instance_buildout(make_config(tmp_path), partition, software)


def test_partition_is_bootstrapped_when_the_software_has_no_buildout(
    tmp_path: Path, partition: Path
) -> None:
    (partition / "buildout.cfg").write_text(TINY)
    software = tmp_path / "software"
    software.mkdir()
    lines: list[str] = []
    result = run_instance_buildout(make_config(tmp_path), partition, software, output=lines.append)
    assert result.ok
    assert (partition / "sbin" / "buildout").exists()
    assert "Installing hello." in lines


def test_partition_timeout_kills_the_whole_tree(tmp_path: Path, partition: Path) -> None:
    software = tmp_path / "software"
    pid_file = tmp_path / "grandchild"
    executable(
        software / "bin" / "buildout",
        f"#!/bin/sh\nsleep 60 &\necho $! > {pid_file}\necho started\nsleep 60\n",
    )
    config = make_config(tmp_path, partition_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(BuildoutError, match="timed out after 1 s") as failure:
        run_instance_buildout(config, partition, software)
    assert time.monotonic() - started < 10
    assert "started" in failure.value.output
    assert failure.value.output.endswith("(killed after 1 s: timeout)")
    grandchild = int(pid_file.read_text())
    assert not psutil.pid_exists(grandchild) or (
        psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    )


def test_cancel_stops_a_running_buildout(tmp_path: Path, partition: Path) -> None:
    software = tmp_path / "software"
    executable(software / "bin" / "buildout", "#!/bin/sh\necho started\nexec sleep 60\n")
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(BuildoutError, match="was stopped"):
        run_instance_buildout(make_config(tmp_path), partition, software, cancel=cancel)
    assert time.monotonic() - started < 10


def test_output_tail_is_bounded_and_the_log_complete(tmp_path: Path) -> None:
    log_file = tmp_path / "log"
    code = "for i in range(20000): print('line', i, 'x' * 20)"
    result = process.run(
        [sys.executable, "-c", code], cwd=tmp_path, home=tmp_path, log_file=log_file
    )
    assert result.ok
    assert len(result.tail) <= process.TAIL_BYTES
    assert result.tail.endswith("line 19999 " + "x" * 20)
    assert len(log_file.read_text().splitlines()) == 20000


def test_inherited_descriptors_are_closed_unless_passed(tmp_path: Path) -> None:
    reader, writer = os.pipe()
    os.set_inheritable(writer, True)
    try:
        command = ["sh", "-c", f"[ -e /proc/self/fd/{writer} ] && echo open || echo closed"]
        closed = process.run(command, cwd=tmp_path, home=tmp_path)
        passed = process.run(command, cwd=tmp_path, home=tmp_path, pass_fds=[writer])
    finally:
        os.close(reader)
        os.close(writer)
    assert closed.tail == "closed"
    assert passed.tail == "open"


def test_a_stray_process_holding_the_output_does_not_block(tmp_path: Path) -> None:
    started = time.monotonic()
    result = process.run(["sh", "-c", "sleep 30 & echo $!"], cwd=tmp_path, home=tmp_path)
    stray = psutil.Process(int(result.tail))
    stray.kill()
    stray.wait(5)
    assert result.ok
    assert time.monotonic() - started < 5


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_root_runs_children_as_the_directory_owner(tmp_path: Path) -> None:
    owned = tmp_path / "owned"
    owned.mkdir()
    shutil.chown(owned, "nobody", "nogroup")
    tmp_path.chmod(0o755)
    result = process.run(["sh", "-c", "id -u; id -g; umask"], cwd=owned, home=owned)
    assert result.tail.splitlines() == ["65534", "65534", "0027"]

    shutil.chown(owned, "nobody", "root")
    with pytest.raises(process.ProcessError, match="group 0"):
        process.run(["true"], cwd=owned, home=owned)

    mine = tmp_path / "mine"
    mine.mkdir()
    assert process.run(["id", "-u"], cwd=mine, home=mine).tail == "0"  # rootless layout


def test_run_feeds_stdin_to_a_child_in_the_given_environment(tmp_path: Path) -> None:
    result = process.run(
        ["sh", "-c", 'cat; echo; echo "$FOO-${HOME:-none}"'],
        cwd=tmp_path,
        home=tmp_path,
        environment={"FOO": "bar", "PATH": os.environ["PATH"]},  # nothing else, not even HOME
        stdin=b"request",
    )
    assert result.ok
    assert result.tail.splitlines() == ["request", "bar-none"]


def test_a_child_that_never_reads_its_stdin_still_meets_its_timeout(tmp_path: Path) -> None:
    result = process.run(
        ["sleep", "30"], cwd=tmp_path, home=tmp_path, stdin=b"x" * 1_000_000, timeout=1
    )
    assert result.timed_out
    assert result.duration < 10


# stands in for another zc.buildout's bin/buildout (SlapOS's fork): its `bootstrap` writes
# a bin/buildout of its own, which records each run instead of building
FORK = """import os, sys
args = sys.argv[1:]
bin_directory = next(
    (a.split("=", 1)[1] for a in args if a.startswith("buildout:bin-directory=")), "bin"
)
os.makedirs(bin_directory, exist_ok=True)
script = os.path.join(bin_directory, "buildout")
with open(script, "w") as handle:
    handle.write("#!/bin/sh\\necho \\"fork buildout in $(pwd): $*\\" >> {record}\\n")
os.chmod(script, 0o755)
with open({record!r}, "a") as handle:
    handle.write("fork bootstrap: " + " ".join(args) + "\\n")
"""


def test_the_buildout_option_reaches_software_and_instance_runs(
    software: Path, partition: Path, tmp_path: Path
) -> None:
    """`[slapos] buildout` names another zc.buildout: it bootstraps the software, whose
    bin/buildout then runs every instance buildout; a partition of a software without
    bin/buildout is bootstrapped with it too."""
    record = tmp_path / "fork.log"
    fork = tmp_path / "fork" / "bin" / "buildout"
    fork.parent.mkdir(parents=True)
    fork.write_text(FORK.format(record=str(record)))
    config = make_config(tmp_path, buildout=str(fork))
    build_software(config, software)
    run_instance_buildout(config, partition, software)
    lines = record.read_text().splitlines()
    assert lines[0].startswith("fork bootstrap: -U") and lines[0].endswith(" bootstrap")
    assert lines[1].startswith(f"fork buildout in {software}: -U")
    assert lines[2] == f"fork buildout in {partition}: -U"

    alone = tmp_path / "bare-software"
    alone.mkdir()
    record.unlink()
    run_instance_buildout(config, partition, alone)
    assert record.read_text().splitlines() == [
        f"fork bootstrap: -U buildout:bin-directory={partition / 'sbin'} bootstrap",
        f"fork buildout in {partition}: -U",
    ]
