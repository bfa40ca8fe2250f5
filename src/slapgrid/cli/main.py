"""The `slapgrid` command: global options, the classic one-shot run, and the subcommands.

`slapgrid --configuration-file slapos.cfg` (or the four root/URL/id flags) runs software,
then instance, then report, as the historical `slapgrid` did. Node options are accepted
before or after the subcommand; after wins.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import click

from slapgrid import __version__
from slapgrid.cli.logs import setup_logging
from slapgrid.cli.node_cmds import (
    NodeContext,
    format_command,
    instance_command,
    node_command,
    node_options,
    plan_command,
    report_command,
    run_all,
    run_daemon,
    software_command,
    status_command,
    supervisorctl_command,
)
from slapgrid.errors import SlapgridError
from slapgrid.exit_status import ExitStatus

log = logging.getLogger("slapgrid")

# commands whose modules are heavy (web server, SQL): imported only when invoked, so a
# node's `slapgrid instance` does not pay for the master's libraries at every run
LAZY_COMMANDS = {
    "master": ("slapgrid.cli.master_cmds", "master_group"),
    "supply": ("slapgrid.cli.user_cmds", "supply_command"),
    "request": ("slapgrid.cli.user_cmds", "request_command"),
    "show": ("slapgrid.cli.user_cmds", "show_command"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module, attribute = LAZY_COMMANDS[name]
            return getattr(importlib.import_module(module), attribute)
        return super().get_command(ctx, name)


@click.group(
    cls=LazyGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@node_options
@click.option("-v", "--verbose", count=True, help="More output; twice shows HTTP traffic.")
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the log to this file.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line, for log collectors.",
)
@click.option(
    "--daemon", is_flag=True, help="Without a command: keep running, like `slapgrid node`."
)
@click.version_option(__version__, prog_name="slapgrid")
@click.pass_context
def cli(
    ctx: click.Context,
    verbose: int,
    log_file: Path | None,
    log_format: str,
    daemon: bool,
    **node_flags: object,
) -> None:
    """slapgrid: the SlapOS node agent.

    Without a command, runs `software`, then `instance`, then `report`, like the classic
    `slapgrid --configuration-file slapos.cfg`. The configuration file defaults to
    $SLAPOS_CONFIGURATION, then /etc/opt/slapos/slapos.cfg, then ~/.slapos/slapos.cfg.
    """
    setup_logging(verbose, log_file, log_format)
    ctx.obj = NodeContext(flags=dict(node_flags), verbose=verbose)
    if ctx.invoked_subcommand is None:
        ctx.exit(run_daemon(ctx.obj) if daemon else run_all(ctx.obj))


for command in (
    software_command,
    instance_command,
    report_command,
    format_command,
    node_command,
    plan_command,
    status_command,
    supervisorctl_command,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: a user's mistake is one line on stderr and a non-zero exit, never a trace."""
    try:
        code = cli.main(args=argv, prog_name="slapgrid", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort:
        click.echo("slapgrid: aborted", err=True)
        code = ExitStatus.INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except SlapgridError as exc:
        click.echo(f"slapgrid: error: {exc}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("slapgrid: interrupted", err=True)
        code = ExitStatus.INTERRUPTED
    except Exception as exc:  # a bug of ours: say so in one line, keep the trace in the log
        log.debug("internal error", exc_info=True)
        click.echo(
            f"slapgrid: internal error: {type(exc).__name__}: {exc} (run with -v for details)",
            err=True,
        )
        code = ExitStatus.INTERNAL_ERROR
    sys.exit(int(code) if isinstance(code, int) else 0)
