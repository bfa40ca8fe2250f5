"""`slapgrid bang`, `promise` and `prune`: the reference's node verbs operators script.

Each parses, calls one function, prints what it did and returns its status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from slapgrid.cli.options import (
    ALL_NODE_OPTIONS,
    LOCATION_OPTIONS,
    MASTER_TLS_OPTIONS,
    NodeContext,
    SubCommand,
    apply_all,
    node_command_body,
)
from slapgrid.exit_status import ExitStatus

DEFAULT_BANG = "bang from the node's operator (slapgrid bang)"


@click.command("bang", cls=SubCommand)
@apply_all([*LOCATION_OPTIONS, *MASTER_TLS_OPTIONS])
@click.option("-m", "--message", default=DEFAULT_BANG, show_default=True, help="Why.")
@node_command_body
def bang_command(context: NodeContext, flags: dict[str, Any], message: str) -> ExitStatus:
    """Ask the master to have every instance of this computer processed again.

    One `computerBang`, as the reference's `slapos node bang`: the master marks the
    computer and bumps every partition it hosts, so the next instance run redeploys them.
    """
    from slapgrid.slap.client import SlapClient

    config = context.config(flags)
    with SlapClient.from_config(config) as client:
        client.computer_bang(message)
    click.echo(f"banged {config.computer_id} at {config.master_url}: {message}")
    return ExitStatus.OK


@click.command("promise", cls=SubCommand)
@apply_all(ALL_NODE_OPTIONS)
@click.option("--only-cp", "--only", "only", help="Comma-separated partition ids (reference).")
@click.argument("partitions", nargs=-1, metavar="[slappartN]...")
@node_command_body
def promise_command(
    context: NodeContext, flags: dict[str, Any], only: str | None, partitions: tuple[str, ...]
) -> ExitStatus:
    """Run the promises of the started partitions now, and tell the master; deploy nothing.

    Every promise runs (no cached result). The master hears an error with the first failure's
    message, or started when a partition recovers. Exit 2 when a promise fails.
    """
    from slapgrid.node.instance.promise_check import run_promise_check
    from slapgrid.slap.client import SlapClient

    names = [*partitions, *(p.strip() for p in (only or "").split(",") if p.strip())]
    config = context.config(flags)
    with SlapClient.from_config(config) as client:
        check = run_promise_check(config, client, names)
    for pid, report in check.reports.items():
        if not report.results:
            click.echo(f"{pid}: no promise")
        elif not report.failed:
            click.echo(f"{pid}: {len(report.results)} promise(s) kept")
        for result in report.failures:
            first = (result.message or "").strip().splitlines()[:1]
            click.echo(f"{pid}: promise {result.title} failed: {''.join(first)}")
    for pid, why in check.skipped:
        click.echo(f"{pid}: skipped, {why}")
    if not check.reports and not check.skipped:
        click.echo("no partition to check")
    return check.status


@click.command("prune", cls=SubCommand)
@apply_all([*LOCATION_OPTIONS, *MASTER_TLS_OPTIONS])
@click.option("--dry-run", is_flag=True, help="List what would go, and why; remove nothing.")
@click.option(
    "--additional-software-directory",
    "other_software",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Another software root whose releases' shared parts stay (repeatable).",
)
@node_command_body
def prune_command(
    context: NodeContext, flags: dict[str, Any], dry_run: bool, other_software: tuple[Path, ...]
) -> ExitStatus:
    """Remove Software Releases and shared parts nothing uses any more.

    A release goes only when the master does not list it here and no partition uses it;
    without the master only shared parts are pruned (exit 3). A shared part goes when no
    software, instance or other part kept refers to its hash.
    """
    from slapgrid.node.prune.run import run_prune, shared_root
    from slapgrid.slap.client import SlapClient

    config = context.config(flags)
    with SlapClient.from_config(config) as client:
        result = run_prune(config, client, dry_run=dry_run, other_software=other_software)
    if result.offline_reason:
        reason = result.offline_reason
        click.echo(f"slapgrid: master unreachable, no release pruned: {reason}", err=True)
    roots = {"software": config.software_root, "shared-part": shared_root(config)}
    shown = [v for v in result.verdicts if v.remove or dry_run]
    for verdict in sorted(shown, key=lambda v: not v.remove):
        url = f" ({verdict.url})" if verdict.url else ""
        what = ("would remove" if dry_run else "removed") if verdict.remove else "keep"
        path = f"{roots[verdict.kind]}/{verdict.target}"
        click.echo(f"{what} {verdict.kind} {path}{url}: {verdict.reason}")
    if not any(verdict.remove for verdict in result.verdicts):
        click.echo("nothing to prune")
    return result.status
