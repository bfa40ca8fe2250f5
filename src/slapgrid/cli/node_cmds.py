"""Node commands: software, instance, report, format, node, plan, status, supervisorctl.

Each command imports the machinery it drives when it runs, not when the CLI loads: a no-op
`slapgrid software` run from cron is mostly interpreter start-up, and must not pay for the
deployment, format, daemon and table-rendering modules it never uses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from slapgrid.exit_status import ExitStatus
from slapgrid.node.config import NodeConfig, find_config_file, load_node_config

if TYPE_CHECKING:
    from slapgrid.slap.client import SlapClient


@dataclass
class NodeContext:
    """What the group parsed; subcommands merge their own flags on top."""

    flags: dict[str, Any] = field(default_factory=dict)
    verbose: int = 0

    def config(
        self, flags: dict[str, Any] | None = None, *, check_paths: bool = True
    ) -> NodeConfig:
        merged = {**self.flags, **{k: v for k, v in (flags or {}).items() if v is not None}}
        path = find_config_file(merged.pop("configuration_file", None))
        return load_node_config(path, merged, check_paths=check_paths)


_PATH = click.Path(path_type=str)

_NODE_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option(
        "--configuration-file",
        "--cfg",
        "configuration_file",
        type=_PATH,
        help="slapos.cfg to read ([slapos] section).",
    ),
    click.option("--master-url", help="URL of the SLAP master."),
    click.option("--computer-id", help="This computer's id at the master (COMP-…)."),
    click.option("--instance-root", type=_PATH, help="Directory holding the partitions."),
    click.option("--software-root", type=_PATH, help="Directory holding built software."),
    click.option("--key-file", "--key_file", "key_file", type=_PATH, help="Client TLS key."),
    click.option("--cert-file", "--cert_file", "cert_file", type=_PATH, help="Client TLS cert."),
    click.option(
        "--master-ca-file",
        "--master_ca_file",
        "master_ca_file",
        type=_PATH,
        help="CA bundle the master's certificate is verified against.",
    ),
    click.option(
        "--certificate-repository-path",
        "--certificate_repository_path",
        "certificate_repository_path",
        type=_PATH,
        help="Directory receiving partition certificates.",
    ),
    click.option(
        "--jobs", "-j", type=click.IntRange(min=1), help="Parallel builds/deployments [cores]."
    ),
    click.option(
        "--buildout-debug",
        is_flag=True,
        default=None,
        help="Run buildout with -D, its output straight on the terminal.",
    ),
]


def node_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every node command accepts, before or after the subcommand name."""
    for option in reversed(_NODE_OPTIONS):
        command = option(command)
    return command


_NODE_OPTION_NAMES = (
    "configuration_file",
    "master_url",
    "computer_id",
    "instance_root",
    "software_root",
    "key_file",
    "cert_file",
    "master_ca_file",
    "certificate_repository_path",
    "jobs",
    "buildout_debug",
)


def dry_run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--dry-run` (print the plan, contact the master read-only, change nothing) and `--json`."""
    command = click.option("--json", "as_json", is_flag=True, help="With --dry-run: JSON.")(command)
    return click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")(command)


def node_command_body(function: Callable[..., ExitStatus | int]) -> Callable[..., None]:
    """Split node flags from command flags, load the config, exit with the function's status."""

    @functools.wraps(function)
    @click.pass_obj
    def wrapper(obj: NodeContext, **kwargs: Any) -> None:
        flags = {name: kwargs.pop(name) for name in _NODE_OPTION_NAMES if name in kwargs}
        raise SystemExit(int(function(obj, flags, **kwargs)))

    return wrapper


def make_client(config: NodeConfig) -> SlapClient:
    """The node's client: computer certificate and CA from the configuration."""
    from slapgrid.slap.client import SlapClient

    return SlapClient(
        config.master_url,
        config.computer_id,
        key_file=config.key_file,
        cert_file=config.cert_file,
        ca_file=config.master_ca_file,
    )


def _split(value: str | None) -> frozenset[str]:
    return frozenset(item.strip() for item in (value or "").split(",") if item.strip())


def run_daemon(context: NodeContext) -> ExitStatus:
    """`slapgrid --daemon`: the classic form of `slapgrid node`."""
    from slapgrid.cli.node_agent import serve

    return serve(lambda: context.config(), make_client)


def run_all(context: NodeContext) -> ExitStatus:
    """The classic one-shot run: software, then instance, then report.

    Each phase runs even if the one before failed (a partition of a built SR can still be
    deployed); the status is the first one that is not OK.
    """
    from slapgrid.node.instance import run as instance
    from slapgrid.node.report.run import run_report
    from slapgrid.node.software import run as software

    config = context.config()
    with make_client(config) as client:
        results = [
            software.run_software(config, client),
            instance.run_instance(config, client),
            run_report(config, client),
        ]
    return next((r.status for r in results if r.status != ExitStatus.OK), ExitStatus.OK)


@click.command("software")
@node_options
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
    with make_client(config) as client:
        if dry_run:
            from slapgrid.cli import render

            render.plan(
                software.plan(config, client.computer(), force=force, only_sr=_split(only)),
                as_json=as_json,
            )
            return 0
        return software.run_software(config, client, only_sr=_split(only), force=force).status


@click.command("instance")
@node_options
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

    config = context.config(flags)
    only_ids = _split(only)
    with make_client(config) as client:
        if dry_run:
            from slapgrid.cli import render
            from slapgrid.node.state import StateStore

            computer = client.computer()
            actions = instance.plan(
                config, computer, StateStore(config.instance_root), force=force, only=only_ids
            )
            render.plan(actions, as_json=as_json)
            return 0
        return instance.run_instance(
            config, client, force=force, only=only_ids, time_budget=time_budget
        ).status


@click.command("report")
@node_options
@dry_run_options
@node_command_body
def report_command(
    context: NodeContext, flags: dict[str, Any], dry_run: bool, as_json: bool
) -> int:
    """Send usage reports and wipe destroyed partitions."""
    from slapgrid.node.report.run import run_report

    config = context.config(flags)
    with make_client(config) as client:
        if dry_run:
            from slapgrid.cli import render
            from slapgrid.node.instance.partition import observe
            from slapgrid.node.planner import plan_destruction

            computer = client.computer()
            observed = {p.partition_id: observe(config, p) for p in computer.partitions}
            render.plan(plan_destruction(computer, observed), as_json=as_json)
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
    click.option("--computer-json", type=_PATH, help="Where to save the computer definition."),
]


def format_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_FORMAT_OPTIONS):
        command = option(command)
    return command


@click.command("format")
@node_options
@format_options
@click.option("--dry-run", is_flag=True, help="Print what would be done and change nothing.")
@node_command_body
def format_command(
    context: NodeContext, flags: dict[str, Any], dry_run: bool, **format_flags: Any
) -> int:
    """Prepare the partitions (directories, users, addresses) and register them."""
    from slapgrid.node.format.run import run_format

    merged = {**context.flags, **{k: v for k, v in flags.items() if v is not None}}
    path = find_config_file(merged.pop("configuration_file", None))
    return run_format(path, {**merged, **format_flags}, dry_run=dry_run)


@click.command("node")
@node_options
@click.option("--now", is_flag=True, help="Skip the random start delay (maximal_delay).")
@click.option(
    "--status-file",
    type=_PATH,
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

    overrides = {**flags, "status_file": status_file, "metrics_port": metrics_port}
    return serve(lambda: context.config(overrides), make_client, now=now, progress=progress)


@click.command("plan")
@node_options
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON.")
@node_command_body
def plan_command(context: NodeContext, flags: dict[str, Any], as_json: bool) -> int:
    """Show what software, instance and report would do, and why, changing nothing.

    The master is only read (one getFullComputerInformation), the disk only looked at.
    """
    from slapgrid.cli import render
    from slapgrid.node.instance import run as instance
    from slapgrid.node.instance.partition import observe
    from slapgrid.node.planner import plan_destruction
    from slapgrid.node.software import run as software
    from slapgrid.node.state import StateStore

    config = context.config(flags)
    with make_client(config) as client:
        computer = client.computer()
    store = StateStore(config.instance_root)
    actions = [
        *software.plan(config, computer),
        *instance.plan(config, computer, store, force=False, only=frozenset()),
        *plan_destruction(
            computer, {p.partition_id: observe(config, p) for p in computer.partitions}
        ),
    ]
    render.plan(actions, as_json=as_json)
    return 0


@click.command("status")
@node_options
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
@node_options
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
@node_command_body
def supervisorctl_command(
    context: NodeContext, flags: dict[str, Any], arguments: tuple[str, ...]
) -> int:
    """Pass a command to the node's supervisord (status, tail, restart …)."""
    from slapgrid.node.instance import run as instance

    config = context.config(flags)
    return instance.supervisor_for(config).supervisorctl(arguments)
