"""`slapgrid node` watching the master: what changed since the last snapshot needs a run."""

from __future__ import annotations

from slapgrid.node.daemon.changes import Change, PartitionView, Snapshot, compare
from slapgrid.slap.documents import Computer, ComputerPartition, SoftwareRelease


def computer(*partitions: ComputerPartition, software: tuple[str, ...] = ()) -> Computer:
    return Computer(
        "COMP-1",
        list(partitions),
        [SoftwareRelease(url, requested_state="available") for url in software],
    )


def part(pid: str, state: str = "started", timestamp: str | None = "1") -> ComputerPartition:
    return ComputerPartition(
        "COMP-1",
        pid,
        requested_state=state,
        software_release=SoftwareRelease("http://sr"),
        parameters={"timestamp": timestamp} if timestamp else {},
    )


def test_snapshot_keeps_what_the_agent_acts_on() -> None:
    snapshot = Snapshot.of(computer(part("slappart0"), software=("http://sr",)))
    view = snapshot.partitions["slappart0"]
    assert isinstance(view, PartitionView)
    assert (view.state, view.software) == ("started", "http://sr")
    assert snapshot.software == frozenset({("http://sr", "available")})


def test_compare_reports_only_what_needs_work() -> None:
    base = Snapshot(
        {
            "p0": PartitionView("1", "started", "u", False),
            "p1": PartitionView("1", "started", "u", False),
            "p2": PartitionView(None, "destroyed", None, True),
            "p3": PartitionView("1", "started", "u", False),
            "p4": PartitionView(None, "destroyed", None, True),
        },
        frozenset({("u", "available")}),
    )
    assert compare(None, base) == Change()  # the first snapshot is the baseline
    assert compare(base, base).empty  # e.g. the agent's own reports moved the generation
    new = Snapshot(
        {
            "p0": PartitionView("2", "started", "u", False),
            "p1": PartitionView("1", "destroyed", "u", False),
            "p2": PartitionView("1", "started", "v", False),
            "p3": PartitionView(None, "destroyed", None, True),
            "p4": PartitionView(None, "destroyed", None, True),
        },
        frozenset({("u", "destroyed"), ("v", "available")}),
    )
    change = compare(base, new)
    assert change.partitions == {
        "p0": "timestamp 1 → 2",
        "p1": "requested started → destroyed",
        "p2": "allocated (started)",
        "p3": "freed",
    }
    assert change.destroyed == ("p1",)
    assert change.software == "u (destroyed), v (available)"
    gone = compare(new, Snapshot(new.partitions, frozenset({("v", "available")})))
    assert gone.software == "u (no longer listed)" and not gone.partitions
    assert new.partition_states() == {"started": 2, "destroyed": 1, "free": 2}
