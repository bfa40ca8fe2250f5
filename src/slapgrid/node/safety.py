"""Values from the master are untrusted: check them before they name a path or enter a file.

A partition id becomes a directory name, an SR URL enters `buildout.cfg` and a directory
name, parameters become buildout values. A hostile master must not be able to escape the
roots the agent owns, nor inject buildout sections, references or options.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from slapgrid.errors import SlapgridError
from slapgrid.slap import names, urls


class UnsafeValueError(SlapgridError):
    """The master sent a value that would escape the agent's roots or inject configuration."""


def partition_id(value: str) -> str:
    """A plain file name (`slap.names`), not one of the agent's names in the instance root."""
    try:
        return names.partition_reference(value)
    except names.InvalidName:
        raise UnsafeValueError(f"refusing partition id {value!r} from the master") from None


def software_release_url(value: str) -> str:
    """The URL, if the rule the embedded master also applies (`slap.urls`) accepts it."""
    try:
        return urls.software_release_url(value)
    except urls.InvalidURL as exc:
        raise UnsafeValueError(f"refusing software release URL from the master: {exc}") from None


def buildout_value(name: str, value: str) -> str:
    """One line, no buildout substitution: `$` is doubled, newlines are refused."""
    if "\n" in value or "\r" in value or "\x00" in value:
        raise UnsafeValueError(f"refusing {name} with a line break: {value[:60]!r}")
    return value.replace("$", "$$")


def software_hash(url: str) -> str:
    """The software directory name: MD5 of the URL exactly as given (the reference's rule)."""
    return hashlib.md5(url.encode("utf-8")).hexdigest()


def inside(root: Path, name: str) -> Path:
    """`root/name`, checked to stay inside `root` even through symlinks."""
    path = root / name
    if not path.resolve().is_relative_to(root.resolve()):
        raise UnsafeValueError(f"{path} leads outside {root}")
    return path
