"""Text that XML can carry: every SLAP answer is XML, so nothing else may be stored.

XML 1.0 has no way to write most control characters, `\\ufffe` or `\\uffff`, not even as
character references. A master that stored one would fail every later answer holding it.
Identifiers with such characters are refused; free text (error logs, bang messages), which
commonly ends with a build's ANSI colour codes, is cleaned instead.
"""

from __future__ import annotations

import re

_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
"""Terminal escape sequences: CSI (colours, cursor), OSC (titles, links), two-byte ones."""


def is_xml_text(value: str) -> bool:
    return _ILLEGAL.search(value) is None


def clean(value: str) -> str:
    """Terminal escape sequences removed, any other character XML cannot carry dropped."""
    return _ILLEGAL.sub("", _ANSI.sub("", value))
