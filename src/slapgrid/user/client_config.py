"""Which master a user talks to, and with which certificate.

A user's configuration is looked for where `slapos request` looks (the flag,
$SLAPOS_CLIENT_CONFIGURATION, ~/.slapos/slapos-client.cfg), then where the node's is, so a
node's own slapos.cfg also works for a user on that node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from slapgrid.master.server import DEFAULT_PORT
from slapgrid.node.config import find_config_file, read_config_file, section

CLIENT_CONFIG_ENV = "SLAPOS_CLIENT_CONFIGURATION"
CLIENT_CONFIG = Path("~/.slapos/slapos-client.cfg")
DEFAULT_MASTER_URL = f"https://127.0.0.1:{DEFAULT_PORT}/"  # `slapgrid master start`


@dataclass(frozen=True)
class ClientConfig:
    """A user's access to a master; user calls never send `computer_id`, the client needs one."""

    master_url: str
    computer_id: str
    key_file: Path | None = None
    cert_file: Path | None = None
    master_ca_file: Path | None = None


def find_client_config(explicit: str | None) -> Path | None:
    """None when there is none: a user of the local master needs no file."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CLIENT_CONFIG_ENV):
        return Path(os.environ[CLIENT_CONFIG_ENV]).expanduser()
    if CLIENT_CONFIG.expanduser().is_file():
        return CLIENT_CONFIG.expanduser()
    return find_config_file(None)


def load_client_config(
    configuration_file: str | None, master_url: str | None, computer_id: str
) -> ClientConfig:
    """The URL: given, else the file's `[slapos] master_url`, else the local master.

    The certificate is the file's `[slapconsole] key_file/cert_file`, as `slapos console` reads;
    the master's CA its `[slapconsole] master_ca_file`, else the node's `[slapos]` one.
    """
    path = find_client_config(configuration_file)
    parser = read_config_file(path) if path is not None else None
    slapos, console = section(parser, "slapos"), section(parser, "slapconsole")
    key_file, cert_file = console.get("key_file"), console.get("cert_file")
    ca_file = console.get("master_ca_file") or slapos.get("master_ca_file")
    return ClientConfig(
        master_url=master_url or slapos.get("master_url") or DEFAULT_MASTER_URL,
        computer_id=computer_id,
        key_file=_path(key_file),
        cert_file=_path(cert_file),
        master_ca_file=_path(ca_file),
    )


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None
