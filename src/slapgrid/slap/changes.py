"""The change feed's wire format, shared by our master and our agent's watcher.

`GET slapgrid/changes?computer_id=C&since=G&timeout=S` answers `{"generation": N}` as soon
as the computer's generation N differs from G, or after S seconds (capped) with N equal to
G. A slapgrid extension: other masters answer 404 there.
"""

from __future__ import annotations

import json

from slapgrid.slap.errors import ProtocolError

CHANGES_PATH = "slapgrid/changes"
ANY_GENERATION = -1  # a `since` no generation equals: the first poll answers at once
DEFAULT_WAIT_SECONDS = 30.0
MAX_WAIT_SECONDS = 60.0  # a master holds no poll longer, whatever it is asked
MEDIA_TYPE = "application/json"


def poll_query(computer_id: str, since: int, timeout: float) -> dict[str, str]:
    """The query string of a long poll."""
    return {"computer_id": computer_id, "since": str(since), "timeout": f"{timeout:g}"}


def parse_poll(since: str | None, timeout: str | None) -> tuple[int, float]:
    """A long poll's `since` and wait, absent values defaulted and the wait capped.

    Raises ValueError when either is not a number.
    """
    wait = min(max(float(timeout or DEFAULT_WAIT_SECONDS), 0.0), MAX_WAIT_SECONDS)
    return int(since or ANY_GENERATION), wait


def encode_generation(generation: int) -> bytes:
    return json.dumps({"generation": generation}, separators=(",", ":")).encode()


def parse_generation(body: bytes) -> int:
    try:
        value = json.loads(body)["generation"]
    except (ValueError, KeyError, TypeError):
        raise ProtocolError('the change feed did not answer {"generation": N}') from None
    if not isinstance(value, int):
        raise ProtocolError("the change feed's generation is not an integer")
    return value
