"""Node commands: software, instance, report, format, node, plan, status, supervisorctl."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from slapgrid.node.config import NodeConfig, find_config_file, load_node_config

NOT_YET = 2


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
)


def node_command_body(function: Callable[..., int]) -> Callable[..., None]:
    """Split node flags from command flags, load the config, exit with the function's code."""

    @functools.wraps(function)
    @click.pass_obj
    def wrapper(obj: NodeContext, **kwargs: Any) -> None:
        flags = {name: kwargs.pop(name) for name in _NODE_OPTION_NAMES if name in kwargs}
        code = function(obj, flags, **kwargs)
        raise SystemExit(code)

    return wrapper


def _not_yet(what: str) -> int:
    click.echo(f"slapgrid: {what} is not implemented yet", err=True)
    return NOT_YET


def run_all(context: NodeContext) -> int:
    """The classic one-shot run: software, then instance, then report; the worst code wins."""
    context.config()
    return _not_yet("the software/instance/report run")


@click.command("software")
@node_options
@node_command_body
def software_command(context: NodeContext, flags: dict[str, Any]) -> int:
    """Build the Software Releases the master wants here, remove the unwanted ones."""
    context.config(flags)
    return _not_yet("software")


@click.command("instance")
@node_options
@node_command_body
def instance_command(context: NodeContext, flags: dict[str, Any]) -> int:
    """Deploy, start and stop the Computer Partitions as the master requests."""
    context.config(flags)
    return _not_yet("instance")


@click.command("report")
@node_options
@node_command_body
def report_command(context: NodeContext, flags: dict[str, Any]) -> int:
    """Send usage reports and wipe destroyed partitions."""
    context.config(flags)
    return _not_yet("report")


@click.command("format")
@node_options
@node_command_body
def format_command(context: NodeContext, flags: dict[str, Any]) -> int:
    """Prepare the partitions (directories, users, addresses) and register them."""
    context.config(flags, check_paths=False)
    return _not_yet("format")


@click.command("node")
@node_options
@node_command_body
def node_command(context: NodeContext, flags: dict[str, Any]) -> int:
    """Run as a long-lived agent keeping this node converged."""
    context.config(flags)
    return _not_yet("node")


@click.command("plan")
@node_options
@node_command_body
def plan_command(context: NodeContext, flags: dict[str, Any]) -> int:
    """Show what a run would do, and why, without changing anything."""
    context.config(flags)
    return _not_yet("plan")


@click.command("status")
@node_options
@node_command_body
def status_command(context: NodeContext, flags: dict[str, Any]) -> int:
    """Show software, partitions, processes and promise results."""
    context.config(flags)
    return _not_yet("status")


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
    context.config(flags)
    return _not_yet("supervisorctl")
