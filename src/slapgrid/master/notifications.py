"""Changes committed by other processes on a shared PostgreSQL database: NOTIFY and LISTEN.

Several workers (or masters) serving one database share no memory, so a commit wakes only
its own process's long polls. Each write that moves generations therefore sends the changed
computers on `CHANNEL` in its own transaction: PostgreSQL delivers the notification only
once, and if, the write commits. Each serving process listens on a dedicated connection of
its event loop. Notifications sent while that connection is down are lost for good, so
after each `LISTEN` (a restart of PostgreSQL, a killed backend) every open poll is woken:
polls re-read their generation from the database and nothing is missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable, Iterable

import psycopg
from sqlalchemy import Text, Update, bindparam, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url

from slapgrid.errors import first_line

log = logging.getLogger("slapgrid.master")

CHANNEL = "slapgrid_changes"
MAX_PAYLOAD = 7999  # bytes: PostgreSQL refuses a payload of 8000 or more
RETRY_BASE = 0.1  # seconds before the first attempt to listen again, doubled up to RETRY_CAP
RETRY_CAP = 5.0
# a listening connection only reads: TCP keepalives tell it when its server vanished unseen
# (a Unix socket ignores them); the database URL's own settings win
KEEPALIVES = {"keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def new_sender() -> str:
    """A name for one store's notifications, unique across processes."""
    return secrets.token_hex(8)


def payloads(sender: str, computers: Iterable[str]) -> list[str]:
    """The computers as JSON objects naming their `sender`, each under PostgreSQL's payload
    limit: a worker knows its own commits already (it woke their polls and remembers their
    generations), and skips them.

    ASCII JSON (one byte a character): a computer reference (255 characters at most) always
    fits in one payload.
    """
    chunks: list[str] = []
    chunk: list[str] = []
    empty = len(_compact(sender, []))
    size = empty
    for computer in computers:
        cost = len(json.dumps(computer)) + 1  # and its comma
        if chunk and size + cost > MAX_PAYLOAD:
            chunks.append(_compact(sender, chunk))
            chunk, size = [], empty
        chunk.append(computer)
        size += cost
    if chunk:
        chunks.append(_compact(sender, chunk))
    return chunks


def _compact(sender: str, computers: list[str]) -> str:
    return json.dumps({"sender": sender, "computers": computers}, separators=(",", ":"))


_PAYLOAD = func.unnest(cast(bindparam("payloads"), ARRAY(Text))).column_valued("payload")
_SENT = select(func.count(func.pg_notify(CHANNEL, _PAYLOAD))).scalar_subquery()


def notifying(statement: Update) -> Update:
    """`statement` made to send, in its transaction, the payloads of its `payloads`
    parameter (`payloads(computers)`): each write saves a round trip (and a statement).

    The condition names no row: PostgreSQL evaluates it once, at the latest with the first
    row the statement changes. A statement that changes none may send nothing, but then no
    generation moved, and nobody needs telling."""
    return statement.where(_SENT >= 0)


def decode(payload: str) -> tuple[str, list[str]] | None:
    """The sender and the computers a payload names; None if it is not ours (anything may
    have changed)."""
    try:
        decoded = json.loads(payload)
        sender, computers = decoded["sender"], decoded["computers"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(sender, str) or not isinstance(computers, list):
        return None
    if not all(isinstance(c, str) for c in computers):
        return None
    return sender, computers


def retry_delay(failures: int) -> float:
    return min(RETRY_CAP, RETRY_BASE * 2 ** max(failures - 1, 0))


class Listener:
    """Listens on `CHANNEL` until cancelled: `changed(computers)` for each notification not
    from `sender` (this worker's own), `caught_up()` once listening again (and on unreadable
    payloads): something may have been missed. Event loop only."""

    def __init__(
        self,
        url: str,
        sender: str,
        changed: Callable[[list[str]], None],
        caught_up: Callable[[], None],
    ) -> None:
        sqlalchemy_url = make_url(url)
        given = sqlalchemy_url.get_dialect()().create_connect_args(sqlalchemy_url)[1]
        self._connect_args = {**KEEPALIVES, **given}
        self.sender = sender
        self.changed = changed
        self.caught_up = caught_up

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    autocommit=True, **self._connect_args
                )
                async with connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    failures = 0
                    self.caught_up()
                    async for notification in connection.notifies():
                        decoded = decode(notification.payload)
                        if decoded is None:
                            self.caught_up()
                        elif decoded[0] != self.sender:
                            self.changed(decoded[1])
                reason = "the connection ended"
            except (psycopg.Error, OSError) as exc:
                reason = first_line(exc)
            failures += 1
            delay = retry_delay(failures)
            log.warning("listening for other workers' changes: %s; again in %g s", reason, delay)
            await asyncio.sleep(delay)
