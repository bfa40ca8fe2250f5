"""PURE: which Software Releases and shared parts `slapgrid prune` removes, and why.

A Software Release directory is removed only when all of these hold:

* the master was asked and does not list it here (neither to keep nor to destroy: a
  release listed `destroyed` is `slapgrid software`'s, which tells the master);
* no partition uses it: none links to it, names it in its buildout files, or is given it
  by the master.

A shared part (`<shared root>/<name>/<hash>`) is removed when its hash appears in nothing
that stays: the `.installed.cfg` and `bin/*` of the software kept (and of any additional
software root), the signature files of the other shared parts kept, the instances' own
buildout files and nested software roots.
Parts only other unused parts refer to go in the same pass (the reference needs one run
per level).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass


class Kind(enum.StrEnum):
    SOFTWARE = "software"
    SHARED_PART = "shared-part"


@dataclass(frozen=True)
class SoftwareDir:
    """A directory of the software root, as the disk shows it."""

    name: str  # the MD5 of its URL
    url: str | None  # from its buildout.cfg, when readable
    signatures: tuple[str, ...] = ()  # its .installed.cfg and bin/* texts
    linked: bool = False  # a symlink named as a release: read, never removed


@dataclass(frozen=True)
class SharedPart:
    path: str  # `<name>/<hash>` under the shared root
    signatures: tuple[str, ...] = ()  # its .buildout-shared.json and .*signature texts

    @property
    def hash(self) -> str:
        return self.path.rpartition("/")[2]


@dataclass(frozen=True)
class Observed:
    """Everything the decision reads, gathered by `run.observe`."""

    software: tuple[SoftwareDir, ...]
    shared: tuple[SharedPart, ...]
    master: Mapping[str, str] | None  # software dir name → requested state; None: not asked
    used_by: Mapping[str, tuple[str, ...]]  # software dir name → partitions using it
    instance_signatures: tuple[str, ...] = ()  # partitions' buildout files, nested software
    other_software: tuple[SoftwareDir, ...] = ()  # `--additional-software-directory`


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    target: str  # a software dir name, or a shared part's `<name>/<hash>`
    remove: bool
    reason: str
    url: str | None = None


def _software(software: SoftwareDir, observed: Observed) -> Verdict:
    def verdict(remove: bool, reason: str) -> Verdict:
        return Verdict(Kind.SOFTWARE, software.name, remove, reason, software.url)

    if software.linked:
        return verdict(False, "a symlink: prune never removes or follows one")
    if users := observed.used_by.get(software.name):
        return verdict(False, f"used by {', '.join(users)}")
    if observed.master is None:
        return verdict(False, "the master was not reached: no release is pruned without it")
    state = observed.master.get(software.name)
    if state == "destroyed":
        return verdict(False, "the master asked to destroy it: `slapgrid software` does")
    if state is not None:
        return verdict(False, f"the master wants it here ({state})")
    return verdict(True, "the master does not list it here and no partition uses it")


def _referrer(part: SharedPart, texts: Iterable[tuple[str, str]]) -> str | None:
    return next((who for who, text in texts if part.hash in text), None)


def _shared(
    parts: Collection[SharedPart], kept_software: Iterable[SoftwareDir], observed: Observed
) -> list[Verdict]:
    """The reference's loop, to its fixed point: drop what nothing that stays refers to."""
    fixed: list[tuple[str, str]] = [
        (f"software {s.name}", text) for s in kept_software for text in s.signatures
    ]
    fixed += [("an instance", text) for text in observed.instance_signatures]
    fixed += [
        (f"software {s.name} (additional)", text)
        for s in observed.other_software
        for text in s.signatures
    ]
    unused: set[str] = set()
    verdicts: dict[str, Verdict] = {}
    while True:
        newly = set()
        for part in parts:
            if part.path in unused:
                continue
            others = [
                (f"shared part {other.path}", text)
                for other in parts
                if other.path not in unused and other.path != part.path
                for text in other.signatures
            ]
            who = _referrer(part, [*fixed, *others])
            if who is None:
                newly.add(part.path)
                verdicts[part.path] = Verdict(
                    Kind.SHARED_PART, part.path, True, "no software, instance or part uses it"
                )
            else:
                verdicts[part.path] = Verdict(Kind.SHARED_PART, part.path, False, f"used by {who}")
        if not newly:
            return [verdicts[part.path] for part in parts]
        unused |= newly


def decide(observed: Observed) -> list[Verdict]:
    """A verdict for every software directory and shared part, removals and keeps alike."""
    software = [_software(s, observed) for s in observed.software]
    kept = [s for s, v in zip(observed.software, software, strict=True) if not v.remove]
    return software + _shared(observed.shared, kept, observed)
