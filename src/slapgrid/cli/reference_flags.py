"""The reference's spellings of node flags: accepted, each mapped or explained in one line.

A node's cron lines and scripts call `slapos node software --now --pidfile …`. slapgrid
takes every flag slapos.core 1.26.1's `slapos node software/instance/report/format` takes:
a flag slapgrid has under another name sets that option; a flag for something slapgrid
does differently is logged in one line, saying what slapgrid does instead. None is an
"unknown option" and none is silently dropped (format's definition files are refused by
format itself, as in slapos.cfg). They are hidden from `--help` (docs/reference-flags.md
lists them); options slapgrid uses as they are (`--promise-timeout`…) are shown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

log = logging.getLogger("slapgrid")

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
_PREFIX = "reference_"  # the click names of hidden reference flags


@dataclass(frozen=True)
class ReferenceFlag:
    """One reference flag: the option it sets (`target`) and/or why it changes nothing.

    `why` is logged when the flag is given; with `about_delay`, only for a run without a
    random start delay (not `slapgrid node`, not `slapgrid --daemon`, which honour it).
    """

    declarations: tuple[str, ...]
    name: str
    target: str | None = None
    why: str | None = None
    about_delay: bool = False
    level: int = logging.WARNING
    attrs: dict[str, Any] = field(default_factory=dict)

    def option(self) -> Decorator:
        flag = {"is_flag": True} if not self.attrs else {}
        return click.option(
            *self.declarations, _PREFIX + self.name, hidden=True, **flag, **self.attrs
        )


_VALUE = {"metavar": "VALUE"}
_PATH = {"type": click.Path(path_type=str)}

PIDFILE = ReferenceFlag(
    ("--pidfile",),
    "pidfile",
    why="--pidfile: no pid file is written: {command} holds a lock under instance_root/.slapgrid"
    " (a build: under software_root/.slapgrid/locks), released even if the run dies",
    attrs=_PATH,
)
SUPERVISORD_SOCKET = ReferenceFlag(
    ("--supervisord-socket", "--supervisord_socket"),
    "supervisord_socket",
    why="--supervisord-socket: ignored: the node's supervisord socket is always"
    " instance_root/sv.sock",
    attrs=_PATH,
)
SUPERVISORD_CONF = ReferenceFlag(
    ("--supervisord-configuration-path", "--supervisord_configuration_path"),
    "supervisord_configuration_path",
    why="--supervisord-configuration-path: ignored: the node's supervisord configuration is"
    " always instance_root/etc/supervisord.conf",
    attrs=_PATH,
)
SIGNATURE_KEY = ReferenceFlag(
    ("--signature_private_key_file", "--signature-private-key-file"),
    "signature_private_key_file",
    target="signature_private_key_file",  # signs binary cache uploads (after a build)
    attrs=_PATH,
)
MAXIMAL_DELAY = ReferenceFlag(
    ("--maximal-delay", "--maximal_delay"),
    "maximal_delay",
    target="maximal_delay",
    why="--maximal-delay: {command} starts at once; the random delay (maximal_delay) is only"
    " before the first run of `slapgrid node`",
    about_delay=True,
    level=logging.INFO,
    attrs={"metavar": "SECONDS"},
)
NOW = ReferenceFlag(
    ("--now",),
    "now",
    why="--now: {command} always starts at once; only `slapgrid node` waits (maximal_delay)",
    about_delay=True,
    level=logging.INFO,
)
BUILDOUT_DEBUG = ReferenceFlag(("--buildout_debug",), "buildout_debug", target="buildout_debug")

# every run command, as the reference's SlapgridCommand (software, instance, report)
RUN = [PIDFILE, SUPERVISORD_SOCKET, SUPERVISORD_CONF, SIGNATURE_KEY, MAXIMAL_DELAY]
ONE_SHOT = [*RUN, NOW]  # `slapgrid node` has a --now of its own, which skips the delay
NODE = [*RUN, BUILDOUT_DEBUG]
CLASSIC = [*ONE_SHOT, BUILDOUT_DEBUG]  # `slapgrid` alone: software, instance, report
SOFTWARE = [
    *ONE_SHOT,
    BUILDOUT_DEBUG,
    ReferenceFlag(
        ("--garbage-collect", "--garbage_collect"),
        "garbage_collect",
        why="--garbage-collect: not done: slapgrid software removes a Software Release only"
        " when the master says it is destroyed; other directories stay",
    ),
]
INSTANCE = [
    *ONE_SHOT,
    BUILDOUT_DEBUG,
    ReferenceFlag(("--all",), "all", target="force"),
    ReferenceFlag(
        ("--force-stop", "--force_stop"),
        "force_stop",
        why="--force-stop: not done: partitions are brought to the state the master requests;"
        " stop services with `slapgrid supervisorctl stop all`",
    ),
]
FORMAT = [
    # `--alter_user True`: format reads the word as it reads slapos.cfg, and refuses nonsense
    ReferenceFlag(("--alter_user",), "alter_user", target="alter_user", attrs=_VALUE),
    ReferenceFlag(("--alter_network",), "alter_network", target="alter_network", attrs=_VALUE),
    ReferenceFlag(("--computer_json",), "computer_json", target="computer_json", attrs=_PATH),
    ReferenceFlag(("-n", "--dry_run"), "dry_run", target="dry_run"),
    # the reference's description, read to keep its addresses and users (never written)
    ReferenceFlag(("-x", "--computer_xml"), "computer_xml", target="computer_xml", attrs=_PATH),
    # not supported: format refuses them in one line, as it does in slapos.cfg
    ReferenceFlag(
        ("-i", "--input_definition_file"),
        "input_definition_file",
        target="input_definition_file",
        attrs=_PATH,
    ),
    ReferenceFlag(
        ("-o", "--output_definition_file"),
        "output_definition_file",
        target="output_definition_file",
        attrs=_PATH,
    ),
    ReferenceFlag(
        ("--now",),
        "format_now",  # names are unique: they are how `settle` finds the flag
        why="--now: slapgrid format always starts at once",
        level=logging.INFO,
    ),
    ReferenceFlag(
        ("-c", "--console"),
        "console",
        why="--console: ignored (obsolete in slapos.core too): the log goes to stderr and"
        " --log-file",
        level=logging.INFO,
        attrs=_VALUE,
    ),
]


def options(flags: Sequence[ReferenceFlag]) -> list[Decorator]:
    """The hidden click options for these reference flags."""
    return [flag.option() for flag in flags]


_ALL = {flag.name: flag for flags in (SOFTWARE, INSTANCE, FORMAT) for flag in flags}


def given(values: dict[str, Any], flag: ReferenceFlag) -> Any:
    """The value click parsed for this flag (None or False: not given)."""
    return values.get(_PREFIX + flag.name)


def settle(command: str, values: dict[str, Any], *, delayed: bool = False) -> None:
    """Pop the reference flags from click's `values`: set their targets, log the others.

    `command` names the command in the explanations; `delayed`: this run has a start delay.
    """
    shown = "slapgrid" if command == "slapgrid" else f"slapgrid {command}"
    for key in [key for key in values if key.startswith(_PREFIX)]:
        value = values.pop(key)
        if value is None or value is False:
            continue
        flag = _ALL[key.removeprefix(_PREFIX)]
        if flag.target is not None:
            values[flag.target] = value
        if flag.why is not None and not (delayed and flag.about_delay):
            log.log(flag.level, flag.why.format(command=shown))
