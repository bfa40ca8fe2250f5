"""User commands against any SLAP master: `supply`, `request`, `show`.

Nothing is kept on this machine: `show` asks the master (`slapgrid.user.instances`), so it
also shows instances requested elsewhere, by any tool.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from slapgrid.cli.options import SubCommand
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import PARTITION_STATES, SoftwareInstance
from slapgrid.slap.errors import ResourceNotReady
from slapgrid.slap.instance_xml import wrap_json
from slapgrid.user.client_config import (
    CLIENT_CONFIG,
    CLIENT_CONFIG_ENV,
    DEFAULT_MASTER_URL,
    load_client_config,
)
from slapgrid.user.instances import answered, list_instances, show_instance

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


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _print_instance(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return
    where = f" on {summary['computer']}/{summary['partition']}" if summary["partition"] else ""
    console = Console()
    console.print(f"{summary['name']}: {summary['state']}{where}", markup=False, highlight=False)
    console.print(f"software release: {summary['software_release']}", markup=False)
    for what in ("parameters", "connection"):
        if not summary[what]:
            click.echo(
                "no connection parameters published yet"
                if what == "connection"
                else "no parameters"
            )
            continue
        table = Table(what, "value")
        for column in table.columns:
            column.overflow = "fold"  # values are copied from here: never cut
        for key, value in sorted(summary[what].items()):
            table.add_row(escape(key), escape(_text(value)))
        console.print(table)


def _print_list(summaries: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summaries, indent=2, sort_keys=True, default=str))
        return
    if not summaries:
        click.echo("no instances requested on this master")
        return
    table = Table("name", "state", "software release", "type", "where")
    for column in table.columns:
        column.overflow = "fold"  # long URLs wrap inside their column, never cut
    for item in summaries:
        where = f"{item['computer']}/{item['partition']}" if item["partition"] else "-"
        kind = item["software_type"] + (" (shared)" if item["shared"] else "")
        row = (item["name"], item["state"], item["software_release"], kind, where)
        table.add_row(*(escape(cell) for cell in row))
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
    with open_client(
        master_url, configuration_file, sla_values.get("computer_guid") or USER
    ) as client:
        try:
            instance: SoftwareInstance | None = client.request(
                url,
                name,
                software_type=software_type,
                parameters=values,
                filter=sla_values,
                state=state,
                shared=shared,
            )
        except ResourceNotReady:
            instance = None
    _print_instance(answered(name, url, software_type, shared, instance), as_json)


@click.command("show", cls=SubCommand)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_master_options
def show_command(
    name: str | None, as_json: bool, master_url: str | None, configuration_file: str | None
) -> None:
    """NAME's state, parameters and connection, or every instance requested, as the master says."""
    with open_client(master_url, configuration_file, USER) as client:
        if name is None:
            _print_list(list_instances(client), as_json)
        else:
            _print_instance(show_instance(client, name), as_json)
