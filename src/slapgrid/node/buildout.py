"""Bootstrapping and running zc.buildout for a software directory or a partition.

Compatible with what Software Releases expect from the reference agent: bootstrap with
the agent's own zc.buildout, the `bin/buildout-bootstrap-skipped` marker, the interpreter
named by the shebang of `bin/buildout`, `-U` always, `-N` and `-c` for software only,
custom `bin/bootstrap*` scripts for instances.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slapgrid.errors import SlapgridError
from slapgrid.node import process
from slapgrid.node.config import NodeConfig
from slapgrid.node.identity import home_of

log = logging.getLogger(__name__)

SKIPPED_MARKER = "buildout-bootstrap-skipped"
# Bootstrap with the agent's own zc.buildout: `-S` keeps the child's site machinery out,
# then the agent's exact import path is restored.
INLINE_BOOTSTRAP = (
    "import sys; sys.path[:] = {path!r}; import zc.buildout.buildout as b; sys.exit(b.main())"
)

Output = Callable[[str], None]


class BuildoutError(SlapgridError):
    """Buildout (or its bootstrap) failed; `output` holds the end of what it printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output

    @property
    def cause(self) -> str | None:
        """The line of buildout's output that says why it failed, if there is one."""
        return error_cause(self.output)

    @property
    def report(self) -> str:
        """What the master is told: the one-line reason, then the output."""
        return f"{self}\n{self.output}" if self.output else str(self)


_CAUSES = (
    re.compile(r"Error: \S"),  # buildout's own last word: `Error: Couldn't find …`
    re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b:? ?"),  # a traceback's end
)


def error_cause(output: str) -> str | None:
    """Buildout's last `Error: …` line, else a traceback's last line, else None."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for pattern in _CAUSES:
        for line in reversed(lines):
            if pattern.match(line):
                return line
    return None


def parse_shebang(script: Path) -> list[str]:
    """Interpreter and its argument from `#!`, as the kernel would split them."""
    try:
        with script.open("rb") as handle:
            first = handle.readline(4096)
    except OSError as exc:
        raise BuildoutError(f"cannot read {script}: {exc.strerror}") from None
    if not first.startswith(b"#!"):
        raise BuildoutError(f"{script} has no #! line naming its Python")
    interpreter, _, argument = first[2:].decode("utf-8", "replace").strip().partition(" ")
    if not interpreter:
        raise BuildoutError(f"{script} has an empty #! line")
    return [interpreter, argument.strip()] if argument.strip() else [interpreter]


def software_arguments(
    directory: Path, *, force: bool = False, extra: Sequence[str] = ()
) -> list[str]:
    """Buildout arguments of a software build (the reference's order); `extra` (the
    networkcache options) come before `-N`."""
    arguments = [
        f"buildout:extends-cache={directory / 'extends-cache'}",
        f"buildout:directory={directory}",
        *extra,
    ]
    if not force:
        arguments.append("-N")
    return [*arguments, "-c", str(directory / "buildout.cfg")]


def bootstrap_command(arguments: Sequence[str], buildout_script: str | None = None) -> list[str]:
    """The agent's Python running zc.buildout's `bootstrap` command."""
    if buildout_script:
        return [sys.executable, "-S", buildout_script, "-U", *arguments, "bootstrap"]
    code = INLINE_BOOTSTRAP.format(path=[entry for entry in sys.path if entry])
    return [sys.executable, "-S", "-c", code, "-U", *arguments, "bootstrap"]


def _logger_output(prefix: str, **extra: str) -> Output:
    """Each line as `[prefix] line`: parallel builds interleave, and stay readable."""
    return lambda line: log.info("[%s] %s", prefix, line, extra=extra)


def _failure(what: str, directory: Path, result: process.ProcessResult) -> BuildoutError:
    if result.timed_out:
        reason = f"{what} in {directory} timed out after {result.timeout:g} s"
    elif result.cancelled:
        reason = f"{what} in {directory} was stopped: the agent is shutting down"
    else:
        reason = f"{what} failed in {directory} (exit code {result.returncode})"
    return BuildoutError(reason, result.tail)


def _checked(
    what: str, directory: Path, command: Sequence[str], **options: Any
) -> process.ProcessResult:
    """Run one buildout step in `directory`; any failure is a BuildoutError naming it."""
    try:
        result = process.run(command, cwd=directory, **options)
    except process.ProcessError as exc:
        raise BuildoutError(f"cannot run {what} in {directory}: {exc}") from None
    if not result.ok:
        raise _failure(what, directory, result)
    return result


def bootstrap(
    config: NodeConfig,
    directory: Path,
    arguments: Sequence[str],
    *,
    output: Output | None = None,
    log_file: Path | None = None,
    cancel: threading.Event | None = None,
    umask: int = process.INSTANCE_UMASK,
    pass_fds: Sequence[int] = (),
) -> process.ProcessResult:
    """Create `bin/buildout` (or the bin directory named in `arguments`) in `directory`."""
    return _checked(
        "buildout bootstrap",
        directory,
        bootstrap_command(arguments, config.buildout),
        home=home_of(directory),
        umask=umask,
        output=output,
        log_file=log_file,
        cancel=cancel,
        pass_fds=pass_fds,
    )


def run_buildout(
    config: NodeConfig,
    directory: Path,
    binary: Path,
    arguments: Sequence[str] = (),
    *,
    output: Output | None = None,
    log_file: Path | None = None,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
    umask: int = process.INSTANCE_UMASK,
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> process.ProcessResult:
    """`<shebang> binary [-D] -U arguments…` in `directory`, as its owner, HOME = directory."""
    command = [*parse_shebang(binary), str(binary)]
    if config.buildout_debug:
        command.append("-D")
    command += ["-U", *arguments]
    return _checked(
        "buildout",
        directory,
        command,
        home=directory,
        umask=umask,
        env=env,
        output=output,
        log_file=log_file,
        timeout=timeout,
        cancel=cancel,
        capture=not config.buildout_debug,
        pass_fds=pass_fds,
    )


def build_software(
    config: NodeConfig,
    directory: Path,
    *,
    force: bool = False,
    output: Output | None = None,
    log_file: Path | None = None,
    cancel: threading.Event | None = None,
    pass_fds: Sequence[int] = (),
    extra_arguments: Sequence[str] = (),
) -> process.ProcessResult:
    """Bootstrap if needed, then run the software buildout of `directory`.

    An existing `bin/buildout` is reused; the marker left while doing so makes the next
    run bootstrap afresh if this one fails (a broken `bin/buildout` must not stick).
    `pass_fds` (the SR's lock) stay open in buildout, so a killed agent's orphaned build
    keeps the SR locked until it ends.
    """
    output = output or _logger_output(directory.name[:8], software=directory.name)
    arguments = software_arguments(directory, force=force, extra=extra_arguments)
    binary = directory / "bin" / "buildout"
    marker = directory / "bin" / SKIPPED_MARKER
    if marker.exists():
        marker.unlink()
        skipped = False
    else:
        skipped = binary.exists()
    common = {"output": output, "log_file": log_file, "cancel": cancel, "pass_fds": pass_fds}
    if skipped:
        marker.touch()
    else:
        bootstrap(config, directory, arguments, umask=process.SOFTWARE_UMASK, **common)
    result = run_buildout(
        config, directory, binary, arguments, umask=process.SOFTWARE_UMASK, **common
    )
    if skipped:
        marker.unlink(missing_ok=True)
    return result


def instance_bootstrap_scripts(software: Path) -> list[Path]:
    """`S/bin/bootstrap*`: an SR's own way of creating the partition's buildout."""
    bin_directory = software / "bin"
    if not bin_directory.is_dir():
        return []
    return sorted(path for path in bin_directory.iterdir() if path.name.startswith("bootstrap"))


def run_instance_buildout(
    config: NodeConfig,
    partition: Path,
    software: Path,
    *,
    output: Output | None = None,
    log_file: Path | None = None,
    cancel: threading.Event | None = None,
) -> process.ProcessResult:
    """Run the partition's buildout (`P/buildout.cfg`, no `-c`) with the partition timeout."""
    output = output or _logger_output(partition.name, partition=partition.name)
    common = {"output": output, "log_file": log_file, "cancel": cancel}
    binary = software / "bin" / "buildout"
    scripts = instance_bootstrap_scripts(software)
    if len(scripts) > 1:
        names = ", ".join(script.name for script in scripts)
        raise BuildoutError(f"{software / 'bin'} holds several bootstrap scripts: {names}")
    if scripts:
        _checked(
            f"bootstrap script {scripts[0].name}",
            partition,
            [*parse_shebang(scripts[0]), str(scripts[0])],
            home=home_of(partition),
            timeout=config.partition_timeout,
            **common,
        )
        binary = partition / "sbin" / "buildout"
    if not binary.exists():
        bootstrap(config, partition, [f"buildout:bin-directory={partition / 'sbin'}"], **common)
        binary = partition / "sbin" / "buildout"
    return run_buildout(
        config,
        partition,
        binary,
        timeout=config.partition_timeout,
        env={"SLAPGRID_INSTANCE_ROOT": str(config.instance_root)},
        **common,
    )
