"""The pure decisions behind `slapgrid prune`, `promise` and the supervisorctl shortcuts."""

from __future__ import annotations

import pytest

from slapgrid.errors import ConfigError
from slapgrid.node.instance.promise_check import select
from slapgrid.node.prune.plan import Kind, Observed, SharedPart, SoftwareDir, decide
from slapgrid.node.supervisor.targets import UnknownTarget, expand, one_process
from slapgrid.slap.documents import Computer, ComputerPartition, SoftwareRelease

A, B, C = "a" * 32, "b" * 32, "c" * 32


def observed(**changes: object) -> Observed:
    base: dict[str, object] = {
        "software": (SoftwareDir(A, "http://sr/a.cfg"), SoftwareDir(B, "http://sr/b.cfg")),
        "shared": (),
        "master": {A: "available"},
        "used_by": {},
    }
    return Observed(**{**base, **changes})  # type: ignore[arg-type]


def removed(verdicts: list) -> set[str]:  # type: ignore[type-arg]
    return {v.target for v in verdicts if v.remove}


# --- prune: Software Releases ---------------------------------------------------------------


def test_a_release_the_master_does_not_list_and_nobody_uses_goes() -> None:
    verdicts = {v.target: v for v in decide(observed())}
    assert verdicts[B].remove and verdicts[B].url == "http://sr/b.cfg"
    assert not verdicts[A].remove and "master wants it" in verdicts[A].reason


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"software": (SoftwareDir(B, None, linked=True),)}, "a symlink"),
        ({"used_by": {B: ("slappart3",)}}, "used by slappart3"),
        ({"master": {A: "available", B: "destroyed"}}, "slapgrid software"),
        ({"master": None}, "master was not reached"),
    ],
)
def test_a_release_stays_when(changes: dict[str, object], why: str) -> None:
    verdict = next(v for v in decide(observed(**changes)) if v.target == B)
    assert not verdict.remove
    assert why in verdict.reason


# --- prune: shared parts --------------------------------------------------------------------


def test_a_shared_part_only_pruned_software_uses_goes_with_it() -> None:
    software = (
        SoftwareDir(A, "http://sr/a.cfg", ("parts = /shared/zlib/1111",)),
        SoftwareDir(B, "http://sr/b.cfg", ("parts = /shared/gcc/2222",)),
    )
    parts = (SharedPart("zlib/1111"), SharedPart("gcc/2222"), SharedPart("orphan/3333"))
    verdicts = {v.target: v for v in decide(observed(software=software, shared=parts))}
    assert removed(list(verdicts.values())) == {B, "gcc/2222", "orphan/3333"}
    assert verdicts["zlib/1111"].reason == f"used by software {A}"
    assert verdicts["gcc/2222"].kind == Kind.SHARED_PART


def test_shared_parts_are_pruned_to_the_fixed_point_in_one_run() -> None:
    """c ← b ← a, nothing uses a: all three go (the reference needs three runs)."""
    parts = (
        SharedPart("a/1111", ('{"deps": "/shared/b/2222"}',)),
        SharedPart("b/2222", ('{"deps": "/shared/c/3333"}',)),
        SharedPart("c/3333"),
    )
    assert removed(decide(observed(shared=parts, software=()))) == {"a/1111", "b/2222", "c/3333"}


def test_a_shared_part_used_by_a_kept_part_or_an_instance_stays() -> None:
    parts = (SharedPart("a/1111", ("/shared/b/2222",)), SharedPart("b/2222"), SharedPart("i/4444"))
    software = (SoftwareDir(A, None, ("/shared/a/1111",)),)
    verdicts = decide(
        observed(software=software, shared=parts, instance_signatures=("uses /shared/i/4444",))
    )
    assert removed(verdicts) == set()
    reasons = {v.target: v.reason for v in verdicts}
    assert reasons["b/2222"] == "used by shared part a/1111"
    assert reasons["i/4444"] == "used by an instance"


def test_an_additional_software_root_keeps_the_parts_it_uses() -> None:
    parts = (SharedPart("zlib/1111"),)
    other = (SoftwareDir(C, None, ("/shared/zlib/1111",)),)
    [verdict] = [
        v for v in decide(observed(shared=parts, other_software=other)) if v.kind == "shared-part"
    ]
    assert (verdict.remove, verdict.reason) == (False, f"used by software {C} (additional)")
    assert C not in {v.target for v in decide(observed(other_software=other))}  # never pruned


def test_a_part_naming_itself_is_not_its_own_user() -> None:
    parts = (SharedPart("a/1111", ('{"location": "/shared/a/1111"}',)),)
    assert removed(decide(observed(shared=parts, software=()))) == {"a/1111"}


# --- promise: which partitions --------------------------------------------------------------


def partition(pid: str, state: str = "started", url: str | None = "http://sr/a.cfg"):  # type: ignore[no-untyped-def]
    release = SoftwareRelease(url) if url else None
    return ComputerPartition("COMP", pid, state, software_release=release)


def test_promise_checks_started_deployed_partitions_and_says_why_not_others() -> None:
    computer = Computer(
        "COMP",
        [
            partition("slappart0"),
            partition("slappart1", "stopped"),
            partition("slappart2"),
            partition("slappart3", "destroyed", None),
        ],
    )
    chosen, skipped = select(computer, [], ["slappart0", "slappart1"])
    assert [p.partition_id for p in chosen] == ["slappart0"]
    assert dict(skipped).keys() == {"slappart1", "slappart2"}  # a free partition: silence
    assert "requested stopped" in dict(skipped)["slappart1"]
    assert "not deployed" in dict(skipped)["slappart2"]
    chosen, skipped = select(computer, ["slappart1"], ["slappart0", "slappart1"])
    assert (chosen, [pid for pid, _ in skipped]) == ([], ["slappart1"])


def test_promise_of_a_partition_the_master_does_not_list_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="no partition slappart9"):
        select(Computer("COMP", [partition("slappart0")]), ["slappart9"], [])


# --- supervisorctl shortcuts ----------------------------------------------------------------

GROUPS = {"slappart0": ["web-on-watch", "once"], "slappart1": ["web-on-watch"]}


@pytest.mark.parametrize(
    ("targets", "names"),
    [
        ((), ["all"]),
        (("all",), ["all"]),
        (("slappart0",), ["slappart0:*"]),
        (("slappart0:*", "slappart0"), ["slappart0:*"]),
        (("slappart0:once", "slappart1"), ["slappart0:once", "slappart1:*"]),
    ],
)
def test_targets_expand_as_supervisorctl_names(targets: tuple[str, ...], names: list[str]) -> None:
    assert expand(targets, GROUPS) == names


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("slappart9", "no partition 'slappart9' (known: slappart0, slappart1)"),
        ("slappart0:nope", "slappart0 has no process 'nope' (has: once, web-on-watch)"),
    ],
)
def test_unknown_targets_are_one_usage_error(target: str, message: str) -> None:
    with pytest.raises(UnknownTarget, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand([target], GROUPS)
    assert UnknownTarget.exit_code == 2


def test_tail_needs_one_process() -> None:
    assert one_process("slappart1", GROUPS) == "slappart1:web-on-watch"
    assert one_process("slappart0:once", GROUPS) == "slappart0:once"
    with pytest.raises(UnknownTarget, match="name one of slappart0:once, slappart0:web-on-watch"):
        one_process("slappart0", GROUPS)
    with pytest.raises(UnknownTarget, match="tail follows one process"):
        one_process("all", GROUPS)
