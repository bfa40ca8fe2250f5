"""Computer and partition references, which become names on a node: one rule for the master
that registers them and for the agent that turns them into directories.

A partition reference names a directory in the instance root and a supervisord group; a
computer reference names a report directory. Both are plain ASCII file names, and a
partition may not take a name the agent keeps for itself in the instance root.
"""

from __future__ import annotations

import re

from slapgrid.errors import SlapgridError
from slapgrid.exit_status import ExitStatus

_REFERENCE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # fullmatch: no "/", no "\n"
RESERVED = frozenset({"etc", "var", "sv.sock"})
"""What the agent keeps in the instance root beside the partitions (and `.slapgrid`)."""


class InvalidName(SlapgridError):
    """A reference this rule refuses; the message says why."""

    exit_code = ExitStatus.USAGE


def computer_reference(value: object) -> str:
    """A plain file name: letters, digits, `_ . -`; no leading dot, no `..`."""
    if not isinstance(value, str) or not _REFERENCE.fullmatch(value) or ".." in value:
        raise InvalidName(
            f"{value!r} is not a valid reference: use up to 100 letters, digits, '_', '.' "
            "or '-', not starting with '.' or '-'"
        )
    return value


def partition_reference(value: object) -> str:
    """A computer reference that is not one of the agent's own names in the instance root."""
    reference = computer_reference(value)
    if reference in RESERVED:
        raise InvalidName(f"{reference!r} is not a valid partition reference: the agent uses it")
    return reference
