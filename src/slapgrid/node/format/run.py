"""`slapgrid format`: partition directories, users, addresses, and registration.

Planned by a pure function (`plan.plan_format`) from the configuration, the description
saved by the previous run and facts about the host; thin `Step` executors (`steps`,
applied by `apply.execute`) then compare each wanted state with the machine and change only
what differs, so a second run changes nothing; the result is registered with the master
(`register`).

Defaults differ from the reference where it is safer: the host network is never touched
unless `alter_network` is asked for (then `ip addr add`, `ip -6 route replace local
<range> dev lo` and, with `create_tap`, `ip tuntap add`); users and groups are only
created when running as root (`alter_user`); partition IPv4 addresses come from
127.1.0.0/16, usable without any set-up; IPv6 comes from `ipv6_prefix`, else (with
alter_network) the interface's global prefix, else a unique-local /64 derived from the
computer id. The description is saved as JSON (`computer_json`), not as XML; on a node
the reference formatted, its `computer_json` or `computer_xml` is read, and the
partitions, users and addresses found there are kept.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slapgrid.node import layout
from slapgrid.node.format.apply import execute
from slapgrid.node.format.config import load_format_config
from slapgrid.node.format.host import Host, os_type, resolve_ipv6
from slapgrid.node.format.plan import FormatPlan, plan_format
from slapgrid.node.format.previous import load_previous
from slapgrid.node.format.register import register
from slapgrid.node.format.steps import FormatError, missing_tools
from slapgrid.node.identity import Identity, agent_identity

log = logging.getLogger(__name__)


def partition_usage(path: Path) -> list[str]:
    """What a partition directory holds besides its resource file: empty means free."""
    try:
        return sorted(name for name in os.listdir(path) if name != layout.RESOURCE_FILE)
    except (FileNotFoundError, NotADirectoryError):
        return []


def render_plan(plan: FormatPlan, changes: Sequence[str]) -> str:
    definition = plan.definition
    lines = [
        f"computer {definition['reference']}: {len(definition['partition_list'])} partition(s), "
        f"address {definition['address']}"
    ]
    for partition in definition["partition_list"]:
        addresses = " ".join(a["addr"] for a in partition["address_list"])
        ipv6_range = partition["ipv6_range"].get("network", "-")
        lines.append(
            f"  {partition['reference']}: user {partition['user']['name']}, {addresses}, "
            f"range {ipv6_range}"
        )
    lines += [f"note: {note}" for note in plan.notes]
    lines += [f"would {change}" for change in changes] or ["nothing to change"]
    return "\n".join(lines)


def run_format(
    config_path: Path | None,
    overrides: Mapping[str, Any],
    *,
    dry_run: bool = False,
    identity: Identity | None = None,
) -> int:
    """`slapgrid format`: plan, apply what differs, register; 0, or raise a SlapgridError.

    A master failure raises `RegistrationError` (exit 2) after the machine is formatted.
    `identity` (who runs format, by default the current user) decides root mode.
    """
    config = load_format_config(config_path, overrides)
    previous = load_previous(config.computer_json, config.computer_xml)
    host = Host(
        identity or agent_identity(),
        resolve_ipv6(config, previous),
        os_type=os_type(),
        python_version=platform.python_version(),
    )
    stored = (previous or {}).get("partition_list") or []
    busy = {
        entry["reference"]: partition_usage(config.instance_root / entry["reference"])
        for entry in stored[config.partition_amount :]
    }
    plan = plan_format(config, previous, host, busy=busy)
    if dry_run:
        print(render_plan(plan, execute(plan.steps, dry_run=True)))
        return 0
    for note in plan.notes:
        log.info("format: %s", note)
    missing = missing_tools(plan.steps)
    if missing:
        raise FormatError(f"missing system command(s): {', '.join(missing)}")
    if not execute(plan.steps):
        log.info("format: nothing to change")
    register(config, plan.definition)
    count = len(plan.definition["partition_list"])
    log.info("format: registered %d partition(s) with %s", count, config.master_url)
    return 0
