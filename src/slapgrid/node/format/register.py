"""Registering the formatted computer with the master (`loadComputerConfigurationFromXML`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slapgrid.errors import SlapgridError
from slapgrid.exit_status import ExitStatus
from slapgrid.node.format.config import FormatConfig
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import NotFoundError, SlapError


class RegistrationError(SlapgridError):
    """The machine is formatted but the master did not take its description (offline)."""

    exit_code = ExitStatus.USAGE  # formatted, but the master did not take the description


def register(config: FormatConfig, definition: Mapping[str, Any]) -> None:
    prefix = "could not register with the master"
    try:
        with SlapClient.from_config(config) as client:
            client.load_computer_configuration(definition)
    except NotFoundError as exc:
        raise RegistrationError(
            f"{prefix}: it does not know computer {config.computer_id} ({exc})"
        ) from None
    except SlapError as exc:
        raise RegistrationError(f"{prefix}: {exc}") from None
