"""The `slapgrid` command: global options, the classic one-shot run, and the subcommands.

`slapgrid --configuration-file slapos.cfg` (or the four root/URL/id flags) runs software,
then instance, then report, as the historical `slapgrid` did. Node options, `-v`, `--log-file`
and `--log-format` are accepted before or after the subcommand; after wins (`-v` adds up).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from slapgrid import __version__
from slapgrid.cli import reference_flags
from slapgrid.cli.logs import LogSettings
from slapgrid.cli.options import (
    ALL_NODE_OPTIONS,
    LOG_SETTINGS,
    NodeContext,
    apply_all,
    drop_lone_equals,
    log_options,
)
from slapgrid.errors import SlapgridError
from slapgrid.exit_status import ExitStatus

log = logging.getLogger("slapgrid")

# every command's module is imported only when that command runs: a node's `slapgrid instance`
# from cron pays neither for the master's web server and SQL nor for the other commands
COMMANDS = {
    "software": ("slapgrid.cli.node_cmds", "software_command"),
    "instance": ("slapgrid.cli.node_cmds", "instance_command"),
    "report": ("slapgrid.cli.node_cmds", "report_command"),
    "format": ("slapgrid.cli.node_cmds", "format_command"),
    "boot": ("slapgrid.cli.node_cmds", "boot_command"),
    "node": ("slapgrid.cli.node_cmds", "node_command"),
    "plan": ("slapgrid.cli.node_cmds", "plan_command"),
    "status": ("slapgrid.cli.shortcut_cmds", "status_command"),
    "supervisorctl": ("slapgrid.cli.node_cmds", "supervisorctl_command"),
    "start": ("slapgrid.cli.shortcut_cmds", "start_command"),
    "stop": ("slapgrid.cli.shortcut_cmds", "stop_command"),
    "restart": ("slapgrid.cli.shortcut_cmds", "restart_command"),
    "tail": ("slapgrid.cli.shortcut_cmds", "tail_command"),
    "bang": ("slapgrid.cli.maintenance_cmds", "bang_command"),
    "promise": ("slapgrid.cli.maintenance_cmds", "promise_command"),
    "prune": ("slapgrid.cli.maintenance_cmds", "prune_command"),
    "master": ("slapgrid.cli.master_cmds", "master_group"),
    "register": ("slapgrid.cli.register_cmd", "register_command"),
    "supply": ("slapgrid.cli.user_cmds", "supply_command"),
    "request": ("slapgrid.cli.user_cmds", "request_command"),
    "show": ("slapgrid.cli.user_cmds", "show_command"),
}


class LazyGroup(click.Group):
    def main(self, args: Sequence[str] | None = None, *rest: Any, **options: Any) -> Any:
        """Click's entry point, after the seed's `--option = value` form is mended."""
        given = sys.argv[1:] if args is None else args
        return super().main(drop_lone_equals(given), *rest, **options)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(
    cls=LazyGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@apply_all(ALL_NODE_OPTIONS)
@apply_all(reference_flags.options(reference_flags.CLASSIC))
@log_options
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
    settings = LogSettings(verbose, log_file, log_format)
    ctx.meta[LOG_SETTINGS] = settings
    settings.apply()
    delayed = daemon or ctx.invoked_subcommand == "node"
    now = delayed and bool(reference_flags.given(node_flags, reference_flags.NOW))
    reference_flags.settle(ctx.invoked_subcommand or "slapgrid", node_flags, delayed=delayed)
    ctx.obj = NodeContext(flags=dict(node_flags), now=now)
    if ctx.invoked_subcommand is None:
        from slapgrid.cli.node_cmds import run_all, run_daemon

        ctx.exit(run_daemon(ctx.obj) if daemon else run_all(ctx.obj))


def main(argv: list[str] | None = None) -> None:
    """Entry point: a user's mistake is one line on stderr and a non-zero exit, never a trace."""
    try:
        code = cli.main(args=argv, prog_name="slapgrid", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort as exc:  # click's word for Ctrl-C (or end of input at a prompt)
        what = "interrupted" if isinstance(exc.__cause__, KeyboardInterrupt) else "aborted"
        click.echo(f"slapgrid: {what}", err=True)
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
