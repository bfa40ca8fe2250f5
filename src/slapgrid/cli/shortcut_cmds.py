"""`slapgrid start|stop|restart|tail|status [slappartN[:*]|slappartN:process|all]`.

The reference's `slapos node start slappart0` shortcuts, thin wrappers over the plumbing of
`slapgrid supervisorctl`: names are expanded (`slappart0` → `slappart0:*`, nothing → `all`)
and checked against the groups supervisord knows (node/supervisor/targets.py), then handed
to supervisorctl, whose exit status is moved to 21-29 as `slapgrid supervisorctl` does.

`slapgrid status` alone stays the node's status view; given partitions or processes it is
supervisorctl's `status` of them (`slapgrid status all`: every process).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import click

from slapgrid.cli.node_cmds import status_command as status_view
from slapgrid.cli.node_cmds import supervisorctl_status
from slapgrid.cli.options import (
    CERTIFICATE_REPOSITORY_OPTION,
    LOCATION_OPTIONS,
    NodeContext,
    SubCommand,
    apply_all,
    node_command_body,
)
from slapgrid.exit_status import ExitStatus

_METAVAR = "[slappartN[:*]|slappartN:PROCESS|all]..."
TARGETS = click.argument("targets", nargs=-1, metavar=_METAVAR)
_OPTIONS = [*LOCATION_OPTIONS, CERTIFICATE_REPOSITORY_OPTION]


def _supervisorctl(
    context: NodeContext,
    flags: dict[str, Any],
    verb: str,
    targets: Sequence[str],
    *,
    before: tuple[str, ...] = (),
) -> int:
    """Check the names against supervisord's groups, then run `supervisorctl VERB NAMES`.

    `before` comes before the names (`tail -f NAME`); tail takes one process.
    """
    from slapgrid.cli.node_cmds import running_supervisor
    from slapgrid.node.supervisor import targets as names

    supervisor = running_supervisor(context.config(flags))
    if supervisor is None:
        return ExitStatus.OK if verb == "status" else ExitStatus.FAILED
    groups = {
        group: [state.name for state in states]
        for group, states in supervisor.process_states().items()
    }
    if verb == "tail":
        selected = [names.one_process(targets[0], groups)]
    else:
        selected = names.expand(targets, groups)
    arguments = [verb, *before, *selected]
    with _signals_end_supervisorctl():
        return supervisorctl_status(supervisor.supervisorctl(arguments))


@contextlib.contextmanager
def _signals_end_supervisorctl() -> Iterator[None]:
    """SIGTERM or SIGHUP (a `timeout`, a closed terminal) raise here, and the waiting
    `subprocess.run` then kills its supervisorctl: a `tail -f` never outlives us."""

    def end(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)

    previous = {number: signal.signal(number, end) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _verb(verb: str, summary: str) -> click.Command:
    @click.command(verb, cls=SubCommand, help=summary)
    @apply_all(_OPTIONS)
    @TARGETS
    @node_command_body
    def command(context: NodeContext, flags: dict[str, Any], targets: tuple[str, ...]) -> int:
        return _supervisorctl(context, flags, verb, targets)

    return command


start_command = _verb(
    "start",
    "Start processes: `slappart0` (all of its processes), `slappart0:PROCESS`, or every one.\n\n"
    "A partition the master wants started is started again by the next instance pass anyway.",
)
stop_command = _verb(
    "stop",
    "Stop processes: `slappart0`, `slappart0:PROCESS`, or every one.\n\n"
    "For a while: the next instance pass (or `slapgrid node`) starts again every "
    "partition the master wants started.",
)
restart_command = _verb(
    "restart", "Restart processes: `slappart0`, `slappart0:PROCESS`, or every one."
)


@click.command("tail", cls=SubCommand)
@apply_all(_OPTIONS)
@click.argument("target", metavar="slappartN[:PROCESS]")
@click.option("--follow/--no-follow", default=True, help="Keep following, as `tail -f` [on].")
@node_command_body
def tail_command(context: NodeContext, flags: dict[str, Any], target: str, follow: bool) -> int:
    """Show a process's log and follow it (supervisorctl's `tail -f`); Ctrl-C ends it.

    A partition with a single process may be named alone. The log holds the process's
    output and errors both (its programs run with `redirect_stderr`).
    """
    return _supervisorctl(context, flags, "tail", [target], before=("-f",) * follow)


@node_command_body
def _status_of(
    context: NodeContext, flags: dict[str, Any], targets: tuple[str, ...], **view: Any
) -> int:
    if view.get("as_json"):
        raise click.UsageError("--json is for the node view: give no partition with it")
    return _supervisorctl(context, flags, "status", targets)


def _status_command() -> click.Command:
    """The node status view, plus optional targets.

    Built around `node_cmds.status_command` rather than by editing it: the view keeps its
    options, and whatever they become, as they are.
    """
    own = {"verbose", "log_file", "log_format"}  # SubCommand adds them again

    def callback(targets: tuple[str, ...], **kwargs: Any) -> Any:
        if targets:
            return _status_of(targets=targets, **kwargs)
        return status_view.callback(**kwargs)  # type: ignore[misc]

    return SubCommand(
        "status",
        params=[
            *(param for param in status_view.params if param.name not in own),
            click.Argument(["targets"], nargs=-1, metavar=_METAVAR),
        ],
        callback=callback,
        help=(status_view.help or "")
        + "\n\nGiven partitions or processes (`slappart0`, `slappart0:PROCESS`, `all`):"
        " supervisorctl's status of them instead.",
    )


status_command = _status_command()
