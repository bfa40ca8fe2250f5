"""Watching the master for changes, so the agent reacts in about a second, not a minute.

Our master answers a long poll of its change feed (`slapgrid.slap.changes`) as soon as the
computer's generation moves: a long poll costs one idle connection and wakes up at the
commit. Other masters answer 404 there; against them the watcher falls back to
fetching the computer document every `poll_interval` seconds. Either way every fetched
document becomes a `Snapshot` of just what the agent acts on (partition timestamps and
requested states, the software list), so the agent's own reports — which move the
generation too — are recognised as nothing to do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from slapgrid.node.config import NodeConfig
from slapgrid.slap import changes
from slapgrid.slap.client import SlapClient
from slapgrid.slap.documents import DESTROYED, Computer
from slapgrid.slap.errors import NotFoundError, ProtocolError, SlapError
from slapgrid.slap.transport import Transport

log = logging.getLogger(__name__)

LONG_POLL = "long-poll"
POLL = "poll"
LONG_POLL_SECONDS = 30.0  # what the watcher asks for; the master caps it at 60
ERROR_BACKOFF_BASE = 1.0
ERROR_BACKOFF_CAP = 30.0


# --- what the agent acts on, and what changed (pure) ---------------------------------------


@dataclass(frozen=True)
class PartitionView:
    timestamp: str | None
    state: str
    software: str | None
    free: bool


@dataclass(frozen=True)
class Snapshot:
    """The parts of the computer document that decide the agent's work."""

    partitions: Mapping[str, PartitionView]
    software: frozenset[tuple[str, str]]

    @classmethod
    def of(cls, computer: Computer) -> Snapshot:
        return cls(
            {
                p.partition_id: PartitionView(
                    p.timestamp, p.requested_state, p.software_release_url, p.is_free
                )
                for p in computer.partitions
            },
            frozenset((s.url, s.state) for s in computer.software_releases),
        )

    def partition_states(self) -> dict[str, int]:
        """How many partitions are free or requested in each state (for metrics)."""
        counts: dict[str, int] = {}
        for view in self.partitions.values():
            key = "free" if view.free else view.state
            counts[key] = counts.get(key, 0) + 1
        return counts


@dataclass(frozen=True)
class Change:
    partitions: Mapping[str, str] = field(default_factory=dict)  # partition → what changed
    software: str = ""  # what changed in the software list, "" if nothing
    destroyed: tuple[str, ...] = ()  # partitions newly requested destroyed

    @property
    def empty(self) -> bool:
        return not (self.partitions or self.software)


def _partition_change(before: PartitionView | None, now: PartitionView) -> str | None:
    if before == now or (now.free and (before is None or before.free)):
        return None
    if before is None or before.free:
        return f"allocated ({now.state})"
    if now.free:
        return "freed"
    if before.state != now.state:
        return f"requested {before.state} → {now.state}"
    if before.software != now.software:
        return "software release changed"
    return f"timestamp {before.timestamp} → {now.timestamp}"


def compare(old: Snapshot | None, new: Snapshot) -> Change:
    """What `new` asks of the agent that `old` did not; the first snapshot is the baseline."""
    if old is None:
        return Change()
    partitions = {}
    destroyed = []
    for pid, view in sorted(new.partitions.items()):
        what = _partition_change(old.partitions.get(pid), view)
        if what is None:
            continue
        partitions[pid] = what
        before = old.partitions.get(pid)
        if (
            view.state == DESTROYED
            and not view.free
            and (before is None or before.state != view.state)
        ):
            destroyed.append(pid)
    added = sorted(new.software - old.software)
    removed = sorted({url for url, _ in old.software - new.software} - {u for u, _ in added})
    software = ", ".join(
        [f"{url} ({state})" for url, state in added]
        + [f"{url} (no longer listed)" for url in removed]
    )
    return Change(partitions, software, tuple(destroyed))


def error_backoff(attempts: int) -> float:
    """1 s, 2 s, 4 s … 30 s between attempts to reach a master that does not answer."""
    return min(ERROR_BACKOFF_CAP, ERROR_BACKOFF_BASE * 2 ** max(attempts - 1, 0))


# --- the watcher thread ---------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """A fresh computer document (after a generation change, or a poll)."""

    snapshot: Snapshot
    mode: str
    generation: int | None = None
    recovered: bool = False  # the master answers again after failures


@dataclass(frozen=True)
class WatchFailed:
    message: str
    attempts: int
    retry_in: float


WatchEvent = Observed | WatchFailed


def changes_transport(config: NodeConfig, timeout: float) -> Transport:
    """A transport whose read timeout outlasts the long poll it carries."""
    return Transport(
        config.master_url,
        key_file=config.key_file,
        cert_file=config.cert_file,
        ca_file=config.master_ca_file,
        timeout=timeout + 15,
    )


class Watcher(threading.Thread):
    """Reports every fresh snapshot (and every failure) to `emit`, until `stop` is set.

    A daemon thread: a long poll in flight may outlive `stop` by up to its timeout, and
    nothing it holds needs cleaning up.
    """

    def __init__(
        self,
        config: NodeConfig,
        connect: Callable[[NodeConfig], SlapClient],
        emit: Callable[[WatchEvent], None],
        *,
        poll_interval: float,
        long_poll_seconds: float = LONG_POLL_SECONDS,
    ) -> None:
        super().__init__(name="watch", daemon=True)
        self.config = config
        self.connect = connect
        self.emit = emit
        self.poll_interval = poll_interval
        self.long_poll_seconds = long_poll_seconds
        self.stop = threading.Event()
        self.mode = LONG_POLL

    def run(self) -> None:
        failures = 0
        generation = changes.ANY_GENERATION
        try:
            with self.connect(self.config) as client:
                transport = changes_transport(self.config, self.long_poll_seconds)
                try:
                    while not self.stop.is_set():
                        try:
                            if self.mode == LONG_POLL:
                                generation = self._long_poll(
                                    client, transport, generation, failures
                                )
                            else:
                                self._poll(client, failures)
                        except SlapError as exc:
                            failures += 1
                            delay = error_backoff(failures)
                            self.emit(WatchFailed(str(exc), failures, delay))
                            self.stop.wait(delay)
                        else:
                            failures = 0
                finally:
                    transport.close()
        except Exception:  # a bug of ours: say so; the agent goes on with periodic runs
            log.exception("the change watcher stopped: changes wait for the periodic runs")

    def _observed(self, client: SlapClient, generation: int | None, failures: int) -> None:
        snapshot = Snapshot.of(client.computer())
        if not self.stop.is_set():
            self.emit(Observed(snapshot, self.mode, generation, recovered=failures > 0))

    def _long_poll(
        self, client: SlapClient, transport: Transport, since: int, failures: int
    ) -> int:
        params = changes.poll_query(self.config.computer_id, since, self.long_poll_seconds)
        try:
            generation = changes.parse_generation(transport.get(changes.CHANGES_PATH, params))
        except (NotFoundError, ProtocolError) as exc:
            # A master without the feed, or an unknown computer: the document tells which.
            self.mode = POLL
            try:
                self._observed(client, None, failures)
            except SlapError:
                self.mode = LONG_POLL
                raise
            log.info(
                "the master has no change feed (%s): polling every %g s",
                exc,
                self.poll_interval,
                extra={"decision": "watch", "mode": POLL},
            )
            self.stop.wait(self.poll_interval)
            return since
        if generation != since or failures:
            self._observed(client, generation, failures)
        return generation

    def _poll(self, client: SlapClient, failures: int) -> None:
        self._observed(client, None, failures)
        self.stop.wait(self.poll_interval)
