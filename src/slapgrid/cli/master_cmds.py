"""`slapgrid master start|show|computer|user|token|signing-key`: run the embedded SLAP master,
look into its database, hand out credentials and the binary cache's signing key.

The configuration file is the one `slapos proxy start --cfg` reads: `[slapproxy]` host, port,
database_uri (and our pki_dir, cache_dir, workers) and `[slapos]` computer_id. Flags
override it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from slapgrid.cli.options import SubGroup
from slapgrid.errors import ConfigError
from slapgrid.master.database import describe
from slapgrid.master.server import (
    DEFAULT_COMPUTER_ID,
    DEFAULT_DATABASE,
    DEFAULT_HOST,
    DEFAULT_PORT,
    check_insecure_host,
    check_workers,
    default_cache_dir,
    default_pki_dir,
    serve,
)
from slapgrid.master.storage import MasterStore, database_url
from slapgrid.node.config import parse_int, read_config_file, section


def master_settings(
    configuration_file: str | None,
    *,
    host: str | None = None,
    port: int | None = None,
    database: str | None = None,
    computer_id: str | None = None,
    data_dir: str | None = None,
    pki_dir: str | None = None,
    cache_dir: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Flags over `[slapproxy]`/`[slapos]` over defaults → host, port, database, computer_id,
    pki_dir (the CA's directory: `pki/` beside a SQLite database), cache_dir (the
    networkcache's: `cache/` beside it too), workers (processes serving)."""
    proxy: dict[str, str] = {}
    slapos: dict[str, str] = {}
    if configuration_file:
        parser = read_config_file(Path(configuration_file).expanduser())
        proxy, slapos = section(parser, "slapproxy"), section(parser, "slapos")
    default_database = str(Path(data_dir or ".") / DEFAULT_DATABASE)
    database = (
        database or proxy.get("database_uri") or proxy.get("database-uri") or default_database
    )
    pki = pki_dir or proxy.get("pki_dir") or default_pki_dir(database, data_dir)
    cache = cache_dir or proxy.get("cache_dir") or default_cache_dir(database, data_dir)
    if workers is None:
        workers = parse_int(proxy.get("workers") or 1, "[slapproxy] workers")
        if workers < 1:
            raise ConfigError(f"option '[slapproxy] workers' must be 1 or more, not {workers}")
    return {
        "host": host or proxy.get("host") or DEFAULT_HOST,
        "port": port
        if port is not None
        else parse_int(proxy.get("port") or DEFAULT_PORT, "[slapproxy] port"),
        "database": database,
        "computer_id": computer_id or slapos.get("computer_id") or DEFAULT_COMPUTER_ID,
        "pki_dir": str(Path(pki).expanduser()),
        "cache_dir": str(Path(cache).expanduser()),
        "workers": workers,
    }


_CONFIG = click.option(
    "--configuration-file",
    "--cfg",
    "configuration_file",
    type=click.Path(dir_okay=False),
    help="A slapos proxy configuration ([slapproxy] host, port, database_uri; "
    "[slapos] computer_id).",
)
_DATABASE = click.option(
    "--database", help=f"SQLite file or SQLAlchemy URL [<data dir>/{DEFAULT_DATABASE}]."
)
_DATA_DIR = click.option(
    "--data-dir", type=click.Path(file_okay=False), help="Directory of the default database [.]."
)
_PKI_DIR = click.option(
    "--pki-dir",
    type=click.Path(file_okay=False),
    help="The master's CA and server certificate [pki/ beside the database].",
)

_CACHE_DIR = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="The networkcache the master serves (shacache, shadir) [cache/ beside the database].",
)


@click.group("master", cls=SubGroup)
def master_group() -> None:
    """The embedded SLAP master (a faster, compatible `slapos proxy`)."""


@master_group.command("start")
@_CONFIG
@click.option("--host", help=f"Address to listen on; IPv6 literals accepted [{DEFAULT_HOST}].")
@click.option("--port", type=click.IntRange(0, 65535), help=f"Port [{DEFAULT_PORT}].")
@_DATABASE
@_DATA_DIR
@_PKI_DIR
@_CACHE_DIR
@click.option(
    "--computer-id", help=f"Default computer, usable before format [{DEFAULT_COMPUTER_ID}]."
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Plain HTTP, every caller trusted: on a loopback address only, for tools that "
    "cannot present a certificate.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Processes serving, sharing the port; above 1 needs PostgreSQL [1].",
)
def start_command(
    configuration_file: str | None,
    host: str | None,
    port: int | None,
    database: str | None,
    data_dir: str | None,
    pki_dir: str | None,
    cache_dir: str | None,
    computer_id: str | None,
    insecure: bool,
    workers: int | None,
) -> None:
    """Serve the SLAP protocol until interrupted: HTTPS, each caller known by its client
    certificate (`slapgrid master computer add`, `user add`)."""
    settings = master_settings(
        configuration_file,
        host=host,
        port=port,
        database=database,
        computer_id=computer_id,
        data_dir=data_dir,
        pki_dir=pki_dir,
        cache_dir=cache_dir,
        workers=workers,
    )
    if data_dir:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    check_workers(settings["workers"], settings["database"])  # before saying where it serves
    if insecure:
        check_insecure_host(settings["host"])
    scheme = "http" if insecure else "https"
    click.echo(
        f"slapgrid master on {scheme}://{_netloc(settings['host'], settings['port'])}/ "
        f"(database {describe(database_url(settings['database']))}, "
        f"computer {settings['computer_id']}"
        + (f", {settings['workers']} workers" if settings["workers"] > 1 else "")
        + (
            ", INSECURE: no caller is authenticated)"
            if insecure
            else f", CA {settings['pki_dir']}/ca.pem)"
        ),
        err=True,
    )
    serve(**settings, insecure=insecure)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@master_group.command("show")
@_CONFIG
@_DATABASE
@_DATA_DIR
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_command(
    configuration_file: str | None, database: str | None, data_dir: str | None, as_json: bool
) -> None:
    """Computers, partitions, software installations and instances in the master database."""
    settings = master_settings(configuration_file, database=database, data_dir=data_dir)
    store = MasterStore(settings["database"], create=False)
    try:
        snapshot = store.snapshot()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(snapshot, indent=2, default=str))
    else:
        _print_snapshot(snapshot)


def _params(values: dict[str, Any]) -> str:
    return "\n".join(f"{key} = {value}" for key, value in sorted(values.items()))


def _print_snapshot(snapshot: dict[str, list[dict[str, Any]]]) -> None:
    console = Console()
    tables: list[tuple[str, list[str], list[list[Any]]]] = [
        (
            "Computers",
            ["computer", "address", "partitions", "generation", "status"],
            [
                [c["reference"], c["address"], c["partitions"], c["generation"], c["status"]]
                for c in snapshot["computers"]
            ],
        ),
        (
            "Software installations",
            ["computer", "url", "requested", "reported"],
            [
                [s["computer"], s["url"], s["requested_state"], s["status"]]
                for s in snapshot["software"]
            ],
        ),
        (
            "Partitions",
            ["computer", "partition", "instance", "tree", "requested", "reported", "timestamp"],
            [
                [
                    p["computer"],
                    p["partition"],
                    p["title"] or "(free)",
                    p["root"],
                    p["requested_state"] if p["slap_state"] == "busy" else "",
                    p["status"],
                    p["timestamp"],
                ]
                for p in snapshot["partitions"]
            ],
        ),
        (
            "Instances",
            ["instance", "partition", "software release", "type", "connection parameters"],
            [
                [
                    p["title"],
                    f"{p['computer']}/{p['partition']}",
                    p["software_release"],
                    p["software_type"],
                    _params(p["connection"]),
                ]
                for p in snapshot["partitions"]
                if p["slap_state"] == "busy"
            ],
        ),
        (
            "Shared instances",
            ["instance", "tree", "host", "requested", "reported", "connection parameters"],
            [
                [
                    s["title"],
                    s["root"],
                    s["host"] or "(none)",
                    s["requested_state"],
                    s["status"],
                    _params(s["connection"]),
                ]
                for s in snapshot["shared"]
            ],
        ),
    ]
    for title, columns, rows in tables:
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if cell is None else str(cell) for cell in row))
        console.print(table)


# --- credentials ---------------------------------------------------------------------------

_OUT = click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write key.pem (0600), cert.pem and ca.pem in; never replaced.",
)


def _where(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that find the master's database and CA (passed on as `**where`)."""
    for option in (_PKI_DIR, _DATA_DIR, _DATABASE, _CONFIG):
        command = option(command)
    return command


def _credentials_of(
    *,
    configuration_file: str | None,
    database: str | None,
    data_dir: str | None,
    pki_dir: str | None,
) -> Any:
    """The master's credentials machinery (store and CA), opened from its settings."""
    from slapgrid.master.credentials import MasterCredentials

    settings = master_settings(
        configuration_file, database=database, data_dir=data_dir, pki_dir=pki_dir
    )
    return MasterCredentials.open(settings["database"], settings["pki_dir"])


@master_group.group("computer", cls=SubGroup)
def computer_group() -> None:
    """Computers' credentials."""


@computer_group.command("add")
@click.argument("computer_id")
@_OUT
@_where
def computer_add_command(computer_id: str, out: Path, **where: str | None) -> None:
    """Write a key and certificate for node COMPUTER_ID; print its slapos.cfg lines."""
    with _credentials_of(**where) as master:
        click.echo(master.add_computer(computer_id, out), nl=False)


@master_group.group("user", cls=SubGroup)
def user_group() -> None:
    """Users' credentials (supply, request, show)."""


@user_group.command("add")
@click.argument("name")
@_OUT
@_where
def user_add_command(name: str, out: Path, **where: str | None) -> None:
    """Write a key and certificate for user NAME; print its [slapconsole] lines."""
    with _credentials_of(**where) as master:
        click.echo(master.add_user(name, out), nl=False)


@master_group.group("token", cls=SubGroup)
def token_group() -> None:
    """One-time registration tokens (`slapgrid register`)."""


@token_group.command("create")
@click.argument("computer_id")
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    help="How long the token stays valid.",
)
@_where
def token_create_command(computer_id: str, hours: float, **where: str | None) -> None:
    """Print a token COMPUTER_ID's node trades once for its certificate."""
    with _credentials_of(**where) as master:
        click.echo(master.create_token(computer_id, hours))


@master_group.command("signing-key")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write signature.key (0600) and signature.crt in; never replaced.",
)
@click.option(
    "--name",
    default="slapgrid binary cache",
    show_default=True,
    help="The certificate's common name (who signs).",
)
def signing_key_command(out: Path, name: str) -> None:
    """Write a key signing binary cache entries and its certificate; print the
    [networkcache] lines that use them (nodes that only download need the certificate)."""
    from slapgrid.master.pki.signing import networkcache_lines, write_signing_key

    key, certificate = write_signing_key(out, name)
    click.echo(networkcache_lines(key, certificate), nl=False)
