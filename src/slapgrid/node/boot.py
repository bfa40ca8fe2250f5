"""`slapgrid boot`: bring a node that has just started back to what the master wants.

The reference's `slapos node boot` re-applies the format, bangs the computer with
"Reboot" (`computerBang`), then deletes every `.timestamp` so that the next run redeploys
everything. slapgrid needs no redeployment: an instance run starts every up-to-date
partition whose services are down (the planner's `services-down`), so boot runs it at
once. A failing format or bang is logged and does not stop the services coming back:
without a master, the instance run starts what supervisord knows (offline, exit 3).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slapgrid.errors import SlapgridError
from slapgrid.exit_status import ExitStatus
from slapgrid.node.config import NodeConfig
from slapgrid.node.format.run import run_format
from slapgrid.node.instance.run import run_instance
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import SlapError

log = logging.getLogger(__name__)

REBOOT_MESSAGE = "Reboot"  # what the reference's boot bangs the computer with


def run_boot(
    config: NodeConfig,
    client: SlapClient,
    format_file: Path | None,
    format_overrides: Mapping[str, Any],
) -> ExitStatus:
    """Format, tell the master, converge; the first status that is not OK, else OK."""
    statuses = []
    try:
        run_format(format_file, format_overrides)
    except SlapgridError as exc:
        log.error("boot: format failed: %s", exc, extra={"action": "boot-format"})
        statuses.append(exc.exit_code)
    try:
        client.computer_bang(REBOOT_MESSAGE)
        log.info("boot: told the master that %s rebooted", config.computer_id)
    except SlapError as exc:
        log.warning("boot: could not tell the master about the reboot: %s", exc)
    run = run_instance(config, client)
    log.info("boot: instance run ended with %s", run.status.name.lower())
    statuses.insert(0, run.status)
    return next((status for status in statuses if status != ExitStatus.OK), ExitStatus.OK)
