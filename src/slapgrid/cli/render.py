"""Tables for people (rich) and JSON for programs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from slapgrid.node.planner import Action
from slapgrid.node.status import NodeStatus

console = Console()


def emit_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def plan(actions: Iterable[Action], *, as_json: bool) -> None:
    rows = list(actions)
    if as_json:
        emit_json(
            [
                {"action": a.kind.value, "target": a.target, "state": a.state, "reason": a.reason}
                for a in rows
            ]
        )
        return
    table = Table(title="Plan (nothing was changed)")
    for column in ("target", "action", "state", "reason"):
        table.add_column(column)
    for action in rows:
        style = "bold" if action.is_work else "dim"
        table.add_row(
            action.target, action.kind.value, action.state or "", action.reason, style=style
        )
    console.print(table)


def summary_line(status: Mapping[str, Any], now: float) -> str:
    """One line on what the daemon does, for the terminal and `slapgrid status`."""
    parts = [f"{status.get('state', '?')}, watch: {status.get('watch', {}).get('mode')}"]
    for lane, run in sorted((status.get("running") or {}).items()):
        parts.append(f"{lane}: {run['job']} for {now - run['since']:.0f} s")
    upcoming = [
        f"{job} in {at - now:.0f} s"
        for job, at in sorted((status.get("next") or {}).items())
        if at is not None and at > now
    ]
    if upcoming:
        parts.append("next " + ", ".join(upcoming))
    master = status.get("master") or {}
    if master.get("errors"):
        parts.append(f"master unreachable ({master['errors']} errors)")
    return "; ".join(parts)


def status(node: NodeStatus, *, as_json: bool) -> None:
    if as_json:
        emit_json(node.as_dict())
        return
    software = Table(title="Software releases")
    for column in ("directory", "url", "built", "last error"):
        software.add_column(column)
    for item in node.software:
        software.add_row(
            item.name, item.url or "?", "yes" if item.built else "no", item.last_error or ""
        )
    console.print(software)
    partitions = Table(title=f"Partitions (supervisord {node.supervisord})")
    for column in ("partition", "last plan", "deployed", "processes", "promises", "last error"):
        partitions.add_column(column)
    for item in node.partitions:
        partitions.add_row(
            item.partition_id,
            item.requested or "",
            item.deployed_timestamp or "never",
            "\n".join(item.processes),
            "\n".join(item.promises),
            (item.last_error or "")
            + (f" ({item.failed_checks} checks failed in a row)" if item.failed_checks else ""),
        )
    console.print(partitions)
    if node.daemon is not None:
        agent = node.daemon
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(agent.get("updated_at", 0)))
        line = (
            summary_line(agent, time.time()) if agent["alive"] else f"not running since {updated}"
        )
        console.print(f"agent (slapgrid node, pid {agent.get('pid')}): {line}", markup=False)
    for kind, run in sorted(node.runs.items()):
        facts = [f"{key} {run[key]}" for key in ("exit_code", "duration") if key in run]
        counts = (
            ("done", "done"),
            ("up_to_date", "up to date"),
            ("failed", "failed"),
            ("promise_failed", "promise failures"),
        )
        facts += [f"{len(run[key])} {label}" for key, label in counts if key in run]
        console.print(f"last {kind} run: " + ", ".join(facts))
