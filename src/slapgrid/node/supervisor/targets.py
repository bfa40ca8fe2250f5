"""PURE: what `slapgrid start|stop|restart|status|tail slappart0…` names in supervisord.

Operators type partitions, as with the reference's `slapos node start slappart0`; supervisord
wants `group:*` or `group:process`. The names are checked against the groups supervisord
knows, so a typo is one clear line instead of supervisorctl's per-name error after others
already started or stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from slapgrid.errors import ConfigError

ALL = "all"

Groups = Mapping[str, Sequence[str]]
"""Each supervisord group and the names of its processes."""


class UnknownTarget(ConfigError):
    """A partition or process supervisord does not know: a usage mistake, exit 2."""


def _known(groups: Groups) -> str:
    return ", ".join(sorted(groups)) or "none"


def expand(targets: Sequence[str], groups: Groups) -> list[str]:
    """supervisorctl's names for `targets`: none or `all` → `all`, `slappart0` → `slappart0:*`.

    `slappart0:*` and `slappart0:process` pass as they are, once checked.
    """
    if not targets or ALL in targets:
        return [ALL]
    names: list[str] = []
    for target in targets:
        group, _, process = target.partition(":")
        if group not in groups:
            raise UnknownTarget(
                f"supervisord knows no partition {group!r} (known: {_known(groups)})"
            )
        if process in ("", "*"):
            name = f"{group}:*"
        elif process in groups[group]:
            name = target
        else:
            listed = ", ".join(sorted(groups[group])) or "none"
            raise UnknownTarget(f"partition {group} has no process {process!r} (has: {listed})")
        if name not in names:
            names.append(name)
    return names


def one_process(target: str, groups: Groups) -> str:
    """The single `group:process` whose log `tail` shows; a partition with one process may be
    named alone."""
    if target == ALL:
        raise UnknownTarget("tail follows one process: name it as slappartN:process")
    [name] = expand([target], groups)
    group, _, process = name.partition(":")
    if process != "*":
        return name
    processes = sorted(groups[group])
    if len(processes) != 1:
        listed = ", ".join(f"{group}:{each}" for each in processes) or "none"
        raise UnknownTarget(f"tail follows one process of {group}: name one of {listed}")
    return f"{group}:{processes[0]}"
