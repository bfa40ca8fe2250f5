"""Options shared by several commands, and the global ones any subcommand accepts after its name.

Declared once here so that each command lists only the options that apply to it, with the
same spelling and help everywhere. Nothing heavy is imported: `slapgrid --help` stays fast.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from slapgrid.cli.logs import LogSettings

if TYPE_CHECKING:
    from slapgrid.node.config import NodeConfig

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def apply_all(options: list[Decorator]) -> Decorator:
    """Stack option decorators so that `--help` lists them in the order given."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


# --- `--option = value`: the seed's example ---------------------------------------------------

_OPTION = re.compile(r"--?[A-Za-z][\w-]*")
_VERBATIM = ("--", "supervisorctl")  # what follows goes elsewhere unchanged


def drop_lone_equals(args: Sequence[str]) -> list[str]:
    """`--configuration-file = slapos.cfg` reads as `--configuration-file slapos.cfg`.

    The seed's documented example puts spaces around `=`. Only a lone `=` right after an
    option (a `-x` or `--name` without a value of its own) and before another argument is
    dropped; nothing after `--` or `supervisorctl` is touched.
    """
    kept: list[str] = []
    for index, arg in enumerate(args):
        if arg in _VERBATIM:
            return kept + list(args[index:])
        after_option = index > 0 and _OPTION.fullmatch(args[index - 1]) is not None
        if arg == "=" and after_option and index + 1 < len(args):
            continue
        kept.append(arg)
    return kept


# --- -v, --log-file, --log-format: before or after the subcommand --------------------------

LOG_SETTINGS = "slapgrid.log"  # key in click's ctx.meta, shared by every context of a run
_LOG_OPTION_NAMES = ("verbose", "log_file", "log_format")


def _log_declarations(log_format_default: str | None) -> list[tuple[list[str], dict[str, Any]]]:
    return [
        (["-v", "--verbose"], {"count": True, "help": "More output; twice shows HTTP traffic."}),
        (
            # --logfile and --log_file: the reference's spellings
            ["--log-file", "--logfile", "--log_file", "log_file"],
            {
                "type": click.Path(dir_okay=False, path_type=Path),
                "help": "Also write the log to this file.",
            },
        ),
        (
            ["--log-format"],
            {
                "type": click.Choice(["text", "json"]),
                "default": log_format_default,
                "show_default": log_format_default is not None,
                "help": "json: one JSON object per line, for log collectors.",
            },
        ),
    ]


def log_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The group's `-v`, `--log-file`, `--log-format`."""
    decorators = [click.option(*decls, **attrs) for decls, attrs in _log_declarations("text")]
    return apply_all(decorators)(command)


class _AfterTheName:
    """Takes the global `-v`, `--log-file`, `--log-format` after the command's name too.

    Given there, they re-configure logging once before the command runs: `-v` adds to the
    group's, the other two win.
    """

    params: list[click.Parameter]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params += [click.Option(d, **a) for d, a in _log_declarations(None)]

    def invoke(self, ctx: click.Context) -> Any:
        given = [ctx.params.pop(name) for name in _LOG_OPTION_NAMES]
        if any(given):
            settings = ctx.meta.get(LOG_SETTINGS, LogSettings()).then(*given)
            ctx.meta[LOG_SETTINGS] = settings
            settings.apply()
        return super().invoke(ctx)  # type: ignore[misc]


class SubCommand(_AfterTheName, click.Command):
    """A subcommand of `slapgrid` (or of one of its groups)."""


class SubGroup(_AfterTheName, click.Group):
    """A group below `slapgrid` (`slapgrid master`), whose commands are SubCommands."""

    command_class = SubCommand


# --- node options ----------------------------------------------------------------------------


@dataclass
class NodeContext:
    """The node options the group parsed; subcommands merge theirs on top (after wins)."""

    flags: dict[str, Any] = field(default_factory=dict)
    now: bool = False  # `slapgrid --now node`, `slapgrid --now --daemon`: no start delay

    def merged(self, flags: dict[str, Any] | None = None) -> dict[str, Any]:
        return {**self.flags, **{k: v for k, v in (flags or {}).items() if v is not None}}

    def config(
        self, flags: dict[str, Any] | None = None, *, check_paths: bool = True
    ) -> NodeConfig:
        from slapgrid.node.config import find_config_file, load_node_config

        merged = self.merged(flags)
        path = find_config_file(merged.pop("configuration_file", None))
        return load_node_config(path, merged, check_paths=check_paths)


PATH = click.Path(path_type=str)

# every node command: the configuration is not complete without them
LOCATION_OPTIONS: list[Decorator] = [
    click.option(
        "--configuration-file",
        "--cfg",
        "configuration_file",
        type=PATH,
        help="slapos.cfg to read ([slapos] section).",
    ),
    click.option("--master-url", help="URL of the SLAP master."),
    click.option("--computer-id", help="This computer's id at the master (COMP-…)."),
    click.option("--instance-root", type=PATH, help="Directory holding the partitions."),
    click.option("--software-root", type=PATH, help="Directory holding built software."),
]
# commands that talk to the master
MASTER_TLS_OPTIONS: list[Decorator] = [
    click.option("--key-file", "--key_file", "key_file", type=PATH, help="Client TLS key."),
    click.option("--cert-file", "--cert_file", "cert_file", type=PATH, help="Client TLS cert."),
    click.option(
        "--master-ca-file",
        "--master_ca_file",
        "master_ca_file",
        type=PATH,
        help="CA bundle the master's certificate is verified against.",
    ),
]
# commands that hand partitions their certificates (deploy, wipe, supervisord's watchdog)
CERTIFICATE_REPOSITORY_OPTION: Decorator = click.option(
    "--certificate-repository-path",
    "--certificate_repository_path",
    "certificate_repository_path",
    type=PATH,
    help="Directory receiving partition certificates.",
)
# commands that run buildout
BUILD_OPTIONS: list[Decorator] = [
    click.option(
        "--jobs", "-j", type=click.IntRange(min=1), help="Parallel builds/deployments [cores]."
    ),
    click.option(
        "--buildout-debug",
        is_flag=True,
        default=None,
        help="Run buildout with -D, its output straight on the terminal.",
    ),
    click.option("--buildout", type=PATH, help="A buildout script to bootstrap with."),
]


def run_options(*, hidden: bool = False) -> list[Decorator]:
    """Periods of the reference's every run command (software, instance, report).

    Shown where they matter (instance, node, the classic run), hidden where the reference
    accepts them and slapgrid has no use for them (software, report): cron lines still work.
    """
    seconds = {"metavar": "SECONDS", "hidden": hidden}
    return [
        click.option(
            "--maximum-periodicity",
            "--maximum_periodicity",
            "maximum_periodicity",
            help="Redeploy a partition at least this often [86400].",
            **seconds,
        ),
        click.option(
            "--promise-timeout",
            "--promise_timeout",
            "promise_timeout",
            help="Time one promise may take [20].",
            **seconds,
        ),
        click.option(
            "--partition-timeout",
            "--partition_timeout",
            "partition_timeout",
            help="Time one partition's buildout may take [none].",
            **seconds,
        ),
    ]


# report takes every option the reference's report does, and shows none it does not use
REPORT_RUN_OPTIONS = [click.option("--buildout", type=PATH, hidden=True), *run_options(hidden=True)]


ALL_NODE_OPTIONS = [
    *LOCATION_OPTIONS,
    *MASTER_TLS_OPTIONS,
    CERTIFICATE_REPOSITORY_OPTION,
    *BUILD_OPTIONS,
    *run_options(),
]

_NODE_OPTION_NAMES = (
    "configuration_file",
    "master_url",
    "computer_id",
    "instance_root",
    "software_root",
    "key_file",
    "cert_file",
    "master_ca_file",
    "certificate_repository_path",
    "jobs",
    "buildout_debug",
    "buildout",
    "maximum_periodicity",
    "promise_timeout",
    "partition_timeout",
    "maximal_delay",  # the reference's --maximal-delay
    "signature_private_key_file",  # the reference's flag: signs binary cache uploads
)


def dry_run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--dry-run` (print the plan, contact the master read-only, change nothing) and `--json`."""
    command = click.option("--json", "as_json", is_flag=True, help="With --dry-run: JSON.")(command)
    return click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")(command)


def node_command_body(function: Callable[..., int]) -> Callable[..., None]:
    """Split node flags from command flags, load the config, exit with the function's code."""

    @functools.wraps(function)
    @click.pass_context
    def wrapper(ctx: click.Context, **kwargs: Any) -> None:
        from slapgrid.cli.reference_flags import settle

        obj: NodeContext = ctx.ensure_object(NodeContext)
        settle(ctx.info_name or "", kwargs, delayed=ctx.info_name == "node")
        flags = {name: kwargs.pop(name) for name in _NODE_OPTION_NAMES if name in kwargs}
        code = function(obj, flags, **kwargs)
        raise SystemExit(code)

    return wrapper
