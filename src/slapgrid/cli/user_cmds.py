"""User commands against any SLAP master: `supply`, `request`, `show`.

`request` remembers what it asked (`slapgrid.user.requests`) so that `show NAME` can repeat
it: that is how a plain SLAP master is read back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from slapgrid.cli.options import SubCommand
from slapgrid.errors import SlapgridError
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import PARTITION_STATES, SoftwareInstance
from slapgrid.slap.instance_xml import unwrap_json, wrap_json
from slapgrid.user.client_config import (
    CLIENT_CONFIG,
    CLIENT_CONFIG_ENV,
    DEFAULT_MASTER_URL,
    load_client_config,
)
from slapgrid.user.requests import InstanceRequest, RequestStore, send

MASTER_URL_ENV = "SLAPGRID_MASTER_URL"
USER = "user"  # the client needs a computer id; user calls never send it


def _root_flag(name: str) -> Any:
    """A value given to the top-level `slapgrid` group (`slapgrid --master-url … request`)."""
    context = click.get_current_context(silent=True)
    flags = getattr(context.find_root().obj, "flags", None) if context else None
    return flags.get(name) if isinstance(flags, dict) else None


def open_client(
    master_url: str | None, configuration_file: str | None, computer: str
) -> SlapClient:
    """The subcommand's flags win over the group's ($SLAPGRID_MASTER_URL counts as a flag)."""
    config = load_client_config(
        configuration_file or _root_flag("configuration_file"),
        master_url or _root_flag("master_url"),
        computer,
    )
    return SlapClient.from_config(config)


def _master_options(command: Any) -> Any:
    command = click.option(
        "--master-url",
        envvar=MASTER_URL_ENV,
        help=f"SLAP master URL [${MASTER_URL_ENV}, [slapos] master_url, {DEFAULT_MASTER_URL}].",
    )(command)
    return click.option(
        "--configuration-file",
        "--cfg",
        "configuration_file",
        type=click.Path(dir_okay=False),
        help=f"Client configuration [${CLIENT_CONFIG_ENV}, {CLIENT_CONFIG}, slapos.cfg].",
    )(command)


# --- output --------------------------------------------------------------------------------


def _pairs(values: Iterable[str], option: str) -> dict[str, str]:
    result = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=option)
        result[key] = item
    return result


def _print_instance(name: str, instance: SoftwareInstance | None, as_json: bool) -> None:
    if instance is None:
        summary: dict[str, Any] = {"name": name, "state": "not allocated yet", "connection": {}}
    else:
        summary = {
            "name": name,
            "state": instance.requested_state,
            "computer": instance.computer_id,
            "partition": instance.partition_id,
            "connection": unwrap_json(instance.connection),
        }
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return
    where = f" on {summary['computer']}/{summary['partition']}" if summary.get("partition") else ""
    click.echo(f"{name}: {summary['state']}{where}")
    if not summary["connection"]:
        click.echo("no connection parameters published yet")
        return
    table = Table("parameter", "value")
    for key, value in sorted(summary["connection"].items()):
        text = value if isinstance(value, str) else json.dumps(value)
        table.add_row(key, text)
    Console().print(table)


# --- commands ------------------------------------------------------------------------------


@click.command("supply", cls=SubCommand)
@click.argument("url")
@click.argument("computer")
@click.option("--remove", is_flag=True, help="Ask the node to remove this software release.")
@_master_options
def supply_command(
    url: str, computer: str, remove: bool, master_url: str | None, configuration_file: str | None
) -> None:
    """Ask COMPUTER to install (or, with --remove, to remove) the software release URL."""
    state = "destroyed" if remove else "available"
    with open_client(master_url, configuration_file, computer) as client:
        client.supply(url, computer, state)
    click.echo(f"{url} supplied to {computer} as {state}")


@click.command("request", cls=SubCommand)
@click.argument("name")
@click.argument("url")
@click.option("--type", "software_type", default="default", show_default=True)
@click.option("--parameter", "-p", "parameters", multiple=True, metavar="KEY=VALUE")
@click.option(
    "--parameters-json",
    type=click.Path(exists=True, dir_okay=False),
    help="A JSON object sent the json-in-xml way (one `_` parameter).",
)
@click.option("--state", type=click.Choice(sorted(PARTITION_STATES)))
@click.option("--shared", is_flag=True, help="Request a shared (slave) instance.")
@click.option(
    "--node", "sla", multiple=True, metavar="KEY=VALUE", help="SLA, e.g. computer_guid=COMP-1."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_master_options
def request_command(
    name: str,
    url: str,
    software_type: str,
    parameters: tuple[str, ...],
    parameters_json: str | None,
    state: str | None,
    shared: bool,
    sla: tuple[str, ...],
    as_json: bool,
    master_url: str | None,
    configuration_file: str | None,
) -> None:
    """Request instance NAME of software release URL; print its connection parameters."""
    values: dict[str, Any] = _pairs(parameters, "--parameter")
    if parameters_json:
        if values:
            raise click.UsageError("give --parameter or --parameters-json, not both")
        try:
            document = json.loads(Path(parameters_json).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--parameters-json") from None
        if not isinstance(document, dict):
            raise click.BadParameter("must hold a JSON object", param_hint="--parameters-json")
        values = wrap_json(document)
    sla_values = _pairs(sla, "--node")
    request: InstanceRequest = {
        "name": name,
        "software_release": url,
        "software_type": software_type,
        "parameters": values,
        "filter": sla_values,
        "state": state,
        "shared": shared,
    }
    with open_client(
        master_url, configuration_file, sla_values.get("computer_guid") or USER
    ) as client:
        instance = send(client, request)
        RequestStore().remember(client.transport.base_url, request)
    _print_instance(name, instance, as_json)


@click.command("show", cls=SubCommand)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_master_options
def show_command(
    name: str | None, as_json: bool, master_url: str | None, configuration_file: str | None
) -> None:
    """Connection parameters of NAME, or the instances requested from this machine."""
    with open_client(master_url, configuration_file, USER) as client:
        known = RequestStore().of_master(client.transport.base_url)
        if name is None:
            _list(known, as_json)
            return
        if name not in known:
            raise SlapgridError(
                f"{name!r} was not requested from {client.transport.base_url} with "
                "`slapgrid request` on this machine; request it again to see it"
            )
        instance = send(client, known[name])
    _print_instance(name, instance, as_json)


def _list(known: dict[str, InstanceRequest], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(known, indent=2, sort_keys=True))
        return
    table = Table("name", "software release", "type", "state", "shared")
    for name, request in sorted(known.items()):
        table.add_row(
            name,
            request["software_release"],
            request["software_type"],
            request["state"] or "started",
            "yes" if request["shared"] else "",
        )
    Console().print(table)
