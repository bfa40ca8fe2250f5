"""Node commands: software, instance, report, format, boot, node, plan, status, supervisorctl.

Each command imports the machinery it drives when it runs, not when the CLI loads: a no-op
`slapgrid software` run from cron is mostly interpreter start-up, and must not pay for the
deployment, format, daemon and table-rendering modules it never uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import click

from slapgrid.cli import reference_flags
from slapgrid.cli.interrupt import interruptible
from slapgrid.cli.options import (
    ALL_NODE_OPTIONS,
    BUILD_OPTIONS,
    CERTIFICATE_REPOSITORY_OPTION,
    LOCATION_OPTIONS,
    MASTER_TLS_OPTIONS,
    PATH,
    REPORT_RUN_OPTIONS,
    NodeContext,
    SubCommand,
    apply_all,
    dry_run_options,
    node_command_body,
    run_options,
)
from slapgrid.errors import SlapgridError
from slapgrid.exit_status import ExitStatus

if TYPE_CHECKING:
    import threading

    from slapgrid.node.config import NodeConfig
    from slapgrid.node.planner import Action
    from slapgrid.node.run_result import RunResult
    from slapgrid.node.supervisor.control import Supervisor
    from slapgrid.slap.client import SlapClient
    from slapgrid.slap.documents import Computer

log = logging.getLogger("slapgrid")


def _split(value: str | None) -> frozenset[str]:
    return frozenset(item.strip() for item in (value or "").split(",") if item.strip())


def run_daemon(context: NodeContext) -> ExitStatus:
    """`slapgrid --daemon`: the classic form of `slapgrid node`."""
    from slapgrid.cli.node_agent import serve
    from slapgrid.slap.client import SlapClient

    return serve(lambda: context.config(), SlapClient.from_config, now=context.now)


def run_all(context: NodeContext) -> ExitStatus:
    """The classic one-shot run: software, then instance, then report.

    Each phase runs even if the one before failed (a partition of a built SR can still be
    deployed); the status is the first one that is not OK.
    """
    from slapgrid.node.instance import run as instance
    from slapgrid.node.report.run import run_report
    from slapgrid.node.software import run as software
    from slapgrid.slap.client import SlapClient

    config = context.config()
    with SlapClient.from_config(config) as client:
        statuses = [
            _offline_is_a_status(
                lambda: interruptible(
                    lambda cancel: software.run_software(config, client, cancel=cancel)
                )
            ),
            interruptible(
                lambda cancel: instance.run_instance(config, client, cancel=cancel)
            ).status,
            _offline_is_a_status(lambda: run_report(config, client)),
        ]
    return next((status for status in statuses if status != ExitStatus.OK), ExitStatus.OK)


def _offline_is_a_status(run: Callable[[], RunResult]) -> ExitStatus:
    """A phase's status; an unreachable master is OFFLINE and the next phase still runs.

    The instance phase then starts the services supervisord knows, as it does on its own.
    """
    try:
        return run().status
    except SlapgridError as exc:
        if exc.exit_code != ExitStatus.OFFLINE:
            raise
        log.warning("%s", exc)
        return ExitStatus.OFFLINE


def _plan_or_run(
    config: NodeConfig,
    *,
    dry_run: bool,
    as_json: bool,
    plan: Callable[[Computer], Iterable[Action]],
    run: Callable[[SlapClient, threading.Event], RunResult],
) -> int:
    """`software` and `instance`: with `--dry-run`, print the plan made from the master's
    computer document and change nothing; else the run, which Ctrl-C interrupts cleanly."""
    from slapgrid.slap.client import SlapClient

    with SlapClient.from_config(config) as client:
        if dry_run:
            from slapgrid.cli import render

            render.plan(plan(client.computer()), as_json=as_json)
            return 0
        return interruptible(lambda cancel: run(client, cancel)).status


@click.command("software", cls=SubCommand)
@apply_all([*LOCATION_OPTIONS, *MASTER_TLS_OPTIONS, *BUILD_OPTIONS, *run_options(hidden=True)])
@apply_all(reference_flags.options(reference_flags.SOFTWARE))
@click.option("--force", "--all", "force", is_flag=True, help="Rebuild even built software.")
@click.option("--only-sr", "--only", "only", help="Comma-separated URLs or MD5s to process.")
@dry_run_options
@node_command_body
def software_command(
    context: NodeContext,
    flags: dict[str, Any],
    force: bool,
    only: str | None,
    dry_run: bool,
    as_json: bool,
) -> int:
    """Build the Software Releases the master wants here, remove the unwanted ones."""
    from slapgrid.node.software import run as software

    config = context.config(flags)
    return _plan_or_run(
        config,
        dry_run=dry_run,
        as_json=as_json,
        plan=lambda computer: software.plan_releases(
            config, computer, force=force, only_sr=_split(only)
        ),
        run=lambda client, cancel: software.run_software(
            config, client, only_sr=_split(only), force=force, cancel=cancel
        ),
    )


@click.command("instance", cls=SubCommand)
@apply_all(ALL_NODE_OPTIONS)
@apply_all(reference_flags.options(reference_flags.INSTANCE))
@click.option("--force", is_flag=True, help="Deploy every partition, even if up to date.")
@click.option("--only-cp", "--only", "only", help="Comma-separated partition ids to process.")
@dry_run_options
@click.option("--time-budget", type=float, help="Start no new work after this many seconds.")
@node_command_body
def instance_command(
    context: NodeContext,
    flags: dict[str, Any],
    force: bool,
    only: str | None,
    dry_run: bool,
    as_json: bool,
    time_budget: float | None,
) -> int:
    """Deploy, start and stop the Computer Partitions as the master requests."""
    from slapgrid.node.instance import run as instance
    from slapgrid.node.state import StateStore

    config = context.config(flags)
    only_ids = _split(only)
    return _plan_or_run(
        config,
        dry_run=dry_run,
        as_json=as_json,
        plan=lambda computer: instance.plan_partitions(
            config, computer, StateStore(config.instance_root), force=force, only=only_ids
        ),
        run=lambda client, cancel: instance.run_instance(
            config, client, force=force, only=only_ids, time_budget=time_budget, cancel=cancel
        ),
    )


@click.command("report", cls=SubCommand)
@apply_all([*LOCATION_OPTIONS, *MASTER_TLS_OPTIONS, CERTIFICATE_REPOSITORY_OPTION])
@apply_all([*REPORT_RUN_OPTIONS, *reference_flags.options(reference_flags.ONE_SHOT)])
@dry_run_options
@node_command_body
def report_command(
    context: NodeContext, flags: dict[str, Any], dry_run: bool, as_json: bool
) -> int:
    """Send usage reports and wipe destroyed partitions."""
    from slapgrid.node.report.run import run_report
    from slapgrid.slap.client import SlapClient

    config = context.config(flags)
    with SlapClient.from_config(config) as client:
        if dry_run:
            from slapgrid.cli import render
            from slapgrid.node.report.plan import plan_report

            render.plan(plan_report(config, client.computer()).actions, as_json=as_json)
            return 0
        return run_report(config, client).status


_FORMAT_OPTIONS = [
    click.option("--partition-amount", type=click.IntRange(min=0), help="Number of partitions."),
    click.option("--partition-base-name", help="Partition directory prefix [slappart]."),
    click.option("--user-base-name", help="Partition user prefix, as root [slapuser]."),
    click.option("--tap-base-name", help="Tap interface prefix [slaptap]."),
    click.option("--software-user", help="Owner of the software root, as root [slapsoft]."),
    click.option("--interface-name", help="Interface receiving partition IPv4 addresses."),
    click.option("--ipv6-interface", help="Interface providing the IPv6 prefix."),
    click.option("--ipv4-local-network", help="Network of partition IPv4s [127.1.0.0/16]."),
    click.option("--ipv6-prefix", help="IPv6 prefix for partitions [derived fd00::/64]."),
    click.option("--ipv6-prefixshift", type=int, help="Bits of each partition's IPv6 range."),
    click.option("--alter-user/--no-alter-user", default=None, help="Create users [as root]."),
    click.option(
        "--alter-network/--no-alter-network",
        default=None,
        help="Configure addresses on the host [off].",
    ),
    click.option("--create-tap/--no-create-tap", default=None, help="One tap per partition."),
    click.option("--computer-json", type=PATH, help="Where to save the computer definition."),
]


@click.command("format", cls=SubCommand)
@apply_all([*LOCATION_OPTIONS, *MASTER_TLS_OPTIONS, *_FORMAT_OPTIONS])
@apply_all(reference_flags.options(reference_flags.FORMAT))
@click.option("--dry-run", is_flag=True, help="Print what would be done and change nothing.")
@node_command_body
def format_command(
    context: NodeContext, flags: dict[str, Any], dry_run: bool, **format_flags: Any
) -> int:
    """Prepare the partitions (directories, users, addresses) and register them."""
    from slapgrid.node.config import find_config_file
    from slapgrid.node.format.run import run_format

    merged = context.merged(flags)
    path = find_config_file(merged.pop("configuration_file", None))
    return run_format(path, {**merged, **format_flags}, dry_run=dry_run)


@click.command("boot", cls=SubCommand)
@apply_all([*LOCATION_OPTIONS, *MASTER_TLS_OPTIONS, CERTIFICATE_REPOSITORY_OPTION])
@node_command_body
def boot_command(context: NodeContext, flags: dict[str, Any]) -> ExitStatus:
    """At machine start: re-apply the format, tell the master, start every started partition.

    Run it once before `slapgrid node` (packaging/slapgrid-boot.service).
    """
    from slapgrid.node.boot import run_boot
    from slapgrid.node.config import find_config_file
    from slapgrid.slap.client import SlapClient

    config = context.config(flags)
    merged = context.merged(flags)
    path = find_config_file(merged.pop("configuration_file", None))
    with SlapClient.from_config(config) as client:
        return run_boot(config, client, path, merged)


@click.command("node", cls=SubCommand)
@apply_all(ALL_NODE_OPTIONS)
@apply_all(reference_flags.options(reference_flags.NODE))
@click.option("--now", is_flag=True, help="Skip the random start delay (maximal_delay).")
@click.option(
    "--status-file",
    type=PATH,
    help="Where to keep the agent's status [<instance_root>/.slapgrid/daemon.json].",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on 127.0.0.1:PORT (0: off) [metrics_port].",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live status line on the terminal [when stderr is a terminal].",
)
@node_command_body
def node_command(
    context: NodeContext,
    flags: dict[str, Any],
    now: bool,
    status_file: str | None,
    metrics_port: int | None,
    progress: bool | None,
) -> ExitStatus:
    """Run as a long-lived agent keeping this node converged (see docs/node-daemon.md).

    Instance runs every minute and within a second or two of a change at the master,
    software runs when the software list changes, report runs every hour. SIGTERM or
    SIGINT stops cleanly (services keep running), SIGHUP re-reads the configuration.
    """
    from slapgrid.cli.node_agent import serve
    from slapgrid.slap.client import SlapClient

    overrides = {**flags, "status_file": status_file, "metrics_port": metrics_port}
    return serve(
        lambda: context.config(overrides),
        SlapClient.from_config,
        now=now or context.now,
        progress=progress,
    )


@click.command("plan", cls=SubCommand)
@apply_all([*LOCATION_OPTIONS, *MASTER_TLS_OPTIONS])
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON.")
@node_command_body
def plan_command(context: NodeContext, flags: dict[str, Any], as_json: bool) -> int:
    """Show what software, instance and report would do, and why, changing nothing.

    The master is only read (one getFullComputerInformation), the disk only looked at.
    """
    from slapgrid.cli import render
    from slapgrid.node.dry_run import plan_node
    from slapgrid.slap.client import SlapClient

    config = context.config(flags)
    with SlapClient.from_config(config) as client:
        computer = client.computer()
    render.plan(plan_node(config, computer), as_json=as_json)
    return 0


@click.command("status", cls=SubCommand)
@apply_all(LOCATION_OPTIONS)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@node_command_body
def status_command(context: NodeContext, flags: dict[str, Any], as_json: bool) -> ExitStatus:
    """Show software, partitions, processes, promise results and the last runs."""
    from slapgrid.cli import render
    from slapgrid.node import status

    config = context.config(flags)
    render.status(status.collect(config), as_json=as_json)
    return ExitStatus.OK


@click.command(
    "supervisorctl", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@apply_all([*LOCATION_OPTIONS, CERTIFICATE_REPOSITORY_OPTION])
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
@node_command_body
def supervisorctl_command(
    context: NodeContext, flags: dict[str, Any], arguments: tuple[str, ...]
) -> int:
    """Pass a command to the node's supervisord (status, tail, restart …)."""
    supervisor = running_supervisor(context.config(flags))
    if supervisor is None:
        status_only = not arguments or arguments[0] == "status"
        return ExitStatus.OK if status_only else ExitStatus.FAILED
    return supervisorctl_status(supervisor.supervisorctl(arguments))


def running_supervisor(config: NodeConfig) -> Supervisor | None:
    """The node's supervisord if it runs; else None, having said why in one line (it is
    never launched just to supervise nothing)."""
    from slapgrid.node.instance import run as instance

    supervisor = instance.supervisor_for(config)
    if supervisor.is_running():
        return supervisor
    why = (
        "forbid_supervisord_automatic_launch is set"
        if supervisor.has_partitions()
        else "no partition has programs yet"
    )
    click.echo(f"slapgrid: supervisord is not running: {why}", err=True)
    return None


def supervisorctl_status(code: int) -> int:
    """supervisorctl's LSB statuses moved to 21-29: its 3 (not running) is not our OFFLINE."""
    if code == 0:
        return ExitStatus.OK
    return ExitStatus.SUPERVISORCTL + code if 0 < code < 10 else ExitStatus.FAILED
