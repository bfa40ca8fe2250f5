"""`slapgrid register`: a new node trades its one-time token for its key and certificate."""

from __future__ import annotations

from pathlib import Path

import click

from slapgrid.node.registration import DEFAULT_OUT


@click.command("register")
@click.option("--master-url", required=True, help="The master's URL.")
@click.option("--token", required=True, help="The token `slapgrid master token create` printed.")
@click.option("--computer-id", required=True, help="This node's computer id (the token's).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Directory to write key.pem (0600), cert.pem and ca.pem in; never replaced.",
)
@click.option(
    "--master-ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Verify an https master against this CA (else, like the reference, unverified).",
)
def register_command(
    master_url: str, token: str, computer_id: str, out: Path, master_ca_file: Path | None
) -> None:
    """Register this node: print the slapos.cfg lines that use its new credentials."""
    from slapgrid.node.registration import config_lines, register

    paths = register(master_url, token, computer_id, out, ca_file=master_ca_file)
    click.echo(config_lines(master_url, computer_id, paths), nl=False)
