"""What `slapgrid request` asked each master, so that `slapgrid show` can ask it again.

A plain SLAP master can only be read back by requesting an instance again; repeating the
identical request changes nothing on the master and answers its connection parameters.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypedDict

from slapgrid.errors import ConfigError
from slapgrid.node.files import atomic_write
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import SoftwareInstance
from slapgrid.slap.errors import ResourceNotReady


class InstanceRequest(TypedDict):
    name: str
    software_release: str
    software_type: str
    parameters: dict[str, Any]
    filter: dict[str, str]
    state: str | None
    shared: bool


def requests_file() -> Path:
    """Per user and machine, in the XDG state directory: it is history, not configuration."""
    state = os.environ.get("XDG_STATE_HOME") or Path("~/.local/state").expanduser()
    return Path(state) / "slapgrid" / "requests.json"


class RequestStore:
    """The remembered requests, per master URL, then per instance name."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or requests_file()

    def load(self) -> dict[str, dict[str, InstanceRequest]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {self.path}: {exc}") from None
        return data if isinstance(data, dict) else {}

    def of_master(self, master_url: str) -> dict[str, InstanceRequest]:
        return self.load().get(master_url, {})

    def remember(self, master_url: str, request: InstanceRequest) -> None:
        data = self.load()
        data.setdefault(master_url, {})[request["name"]] = request
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(data, indent=2, sort_keys=True), 0o600)


def send(client: SlapClient, request: InstanceRequest) -> SoftwareInstance | None:
    """The instance as the master answers the request; None while it is not allocated yet."""
    try:
        return client.request(
            request["software_release"],
            request["name"],
            software_type=request["software_type"],
            parameters=request["parameters"],
            filter=request["filter"],
            state=request["state"],
            shared=request["shared"],
        )
    except ResourceNotReady:
        return None
