"""Tables for people (rich) and JSON for programs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from slapgrid.node.planner import Action
from slapgrid.node.status import NodeStatus, human_age

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


def _ago(at: float | None, now: float, never: str = "never") -> str:
    return never if not at else f"{human_age(now - at)} ago"


def _cells(*values: str | None) -> list[Text]:
    """Text, never markup: `[buildout] error` from a log stays as written."""
    return [Text(value or "") for value in values]


def status(node: NodeStatus, *, as_json: bool, out: Console | None = None) -> None:
    """Tables that fit the terminal: long URLs and paths fold inside their column."""
    out = out or console
    if as_json:
        out.print_json(json.dumps(node.as_dict(), default=str))
        return
    now = time.time()
    software = Table(title="Software releases", expand=False)
    software.add_column("url", overflow="fold", ratio=3)
    software.add_column("built", no_wrap=True)
    software.add_column("origin", overflow="fold", ratio=1)
    software.add_column("last error", overflow="fold", ratio=2)
    for item in node.software:
        url = f"{item.url or '?'}\n({item.name})"
        built = "yes" if item.built else "no"
        software.add_row(*_cells(url, built, item.origin or "-", item.last_error))
    out.print(software)
    partitions = Table(title=f"Partitions (supervisord {node.supervisord})")
    partitions.add_column("partition", overflow="fold", ratio=2)
    partitions.add_column("software release", overflow="fold", ratio=3)
    partitions.add_column("deployed", overflow="fold", ratio=1)
    partitions.add_column("processes, promises", overflow="fold", ratio=3)
    partitions.add_column("last error", overflow="fold", ratio=3)
    for item in node.partitions:
        name = item.partition_id + (f"\n{item.title}" if item.title else "")
        deployed = _ago(item.deployed_at, now) + (
            f"\nplan: {item.requested}" if item.requested else ""
        )
        error = (item.last_error or "") + (
            f" ({item.failed_checks} checks failed in a row)" if item.failed_checks else ""
        )
        health = "\n".join([*item.processes, *item.promises])
        partitions.add_row(*_cells(name, item.software_release or "-", deployed, health, error))
    out.print(partitions)
    if node.daemon is not None:
        agent = node.daemon
        since = _ago(agent.get("updated_at"), now, "an unknown time")
        line = summary_line(agent, now) if agent["alive"] else f"not running since {since}"
        out.print(f"agent (slapgrid node, pid {agent.get('pid')}): {line}", markup=False)
    for kind, run in sorted(node.runs.items()):
        facts = [_ago(run.get("at") or run.get("finished"), now, "at an unknown time")]
        facts += [f"exit code {run['exit_code']}"] if "exit_code" in run else []
        facts += [f"took {human_age(run['duration'])}"] if "duration" in run else []
        counts = (
            ("done", "done"),
            ("up_to_date", "up to date"),
            ("failed", "failed"),
            ("promise_failed", "promise failures"),
        )
        facts += [f"{len(run[key])} {label}" for key, label in counts if key in run]
        out.print(f"last {kind} run: " + ", ".join(facts), markup=False, highlight=False)
