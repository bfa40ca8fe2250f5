"""`slapgrid software`: build the Software Releases the master lists, remove destroyed ones.

Decisions come from the planner (pure); this module observes the disk, then carries the
actions out: independent builds run in parallel (`jobs`), each under a per-SR lock so two
runs never build one SR at once. The order of a build is the reference's: report
building, build, report available, and only then write `.completed`, atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import pwd
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from slapgrid.errors import ConfigError, SlapgridError
from slapgrid.exit_status import ExitStatus
from slapgrid.node import layout, safety
from slapgrid.node.buildout import BuildoutError, build_software
from slapgrid.node.config import NodeConfig
from slapgrid.node.disk import check_free_space
from slapgrid.node.files import atomic_write, rotate
from slapgrid.node.planner import Action, Cause, Kind, SoftwareObservation, plan_software
from slapgrid.node.run_result import RunResult
from slapgrid.node.safety import software_hash
from slapgrid.node.software.cache import decisions as cache_decisions
from slapgrid.node.software.cache import steps as cache
from slapgrid.node.software.cache.decisions import CacheSettings, buildout_arguments
from slapgrid.node.state import StateStore
from slapgrid.slap.documents import Computer, SoftwareRelease
from slapgrid.slap.errors import NotFoundError, SlapError

log = logging.getLogger(__name__)

LOCK_POLL = 1.0  # seconds between checks of the cancel event while waiting for a lock


class SoftwareClient(Protocol):
    """The master calls a software run makes (`SlapClient` has them)."""

    def computer(self) -> Any: ...
    def building_software_release(self, url: str) -> None: ...
    def available_software_release(self, url: str) -> None: ...
    def destroyed_software_release(self, url: str) -> None: ...
    def software_release_error(self, url: str, log: str) -> None: ...


class Cancelled(SlapgridError):
    """The run was asked to stop before this item could start."""


# --- pure helpers -------------------------------------------------------------------------


def select_releases(releases: Iterable[Any], only_sr: Iterable[str] = ()) -> list[SoftwareRelease]:
    """The releases this run handles: each URL once, and only those `only_sr` names.

    A filter entry names a release by URL or by the MD5 of its URL (its directory name).
    Anything with `.url` and `.requested_state` is accepted.
    """
    wanted = {entry for entry in only_sr if entry}
    wanted |= {software_hash(entry) for entry in wanted}
    selected: list[SoftwareRelease] = []
    seen: set[str] = set()
    for release in releases:
        if release.url in seen or (wanted and software_hash(release.url) not in wanted):
            continue
        seen.add(release.url)
        selected.append(SoftwareRelease(release.url, requested_state=release.requested_state))
    return selected


def buildout_cfg(url: str, shared_parts: Sequence[str], build_time_parts: Sequence[str]) -> str:
    """`S/buildout.cfg`: extend the SR URL, tell it where shared parts live.

    An empty list is left out: SlapOS's own buildout reads it as "none", and the
    upstream zc.buildout would warn about an unused option on every build.
    """

    def lines(name: str, values: Sequence[str]) -> str:
        if not values:
            return ""
        continued = "".join(f"\n\t{safety.buildout_value(name, value)}" for value in values)
        return f"{name} ={continued}\n"

    return (
        "[buildout]\n"
        f"extends = {safety.buildout_value('url', safety.software_release_url(url))}\n"
        + lines("shared-part-list", shared_parts)
        + lines("build-time-part-list", build_time_parts)
    )


# --- observing the disk -------------------------------------------------------------------


def partitions_by_software(instance_root: Path) -> dict[Path, tuple[str, ...]]:
    """Which partitions use which software directory (their `software_release` link)."""
    users: dict[Path, list[str]] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(instance_root.iterdir()):
            link = entry / "software_release"
            if link.is_symlink():
                target = Path(os.path.realpath(link))
                users.setdefault(target, []).append(entry.name)
    return {path: tuple(names) for path, names in users.items()}


def observe_releases(config: NodeConfig, releases: Iterable[Any]) -> dict[str, SoftwareObservation]:
    """Each release's directory on disk, as the planner needs it: built, and used by whom."""
    users = partitions_by_software(config.instance_root)
    observed = {}
    for release in releases:
        directory = config.software_root / software_hash(release.url)
        observed[release.url] = SoftwareObservation(
            exists=directory.exists(),
            completed=(directory / layout.COMPLETED).exists(),
            used_by=users.get(Path(os.path.realpath(directory)), ()),
        )
    return observed


# --- acting -------------------------------------------------------------------------------


def _give_to(path: Path, owner: os.stat_result) -> None:
    if os.geteuid() == 0 and (path.lstat().st_uid, path.lstat().st_gid) != (
        owner.st_uid,
        owner.st_gid,
    ):
        os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def prepare_directory(config: NodeConfig, directory: Path, url: str) -> None:
    """Create `S` for its owner (the owner of the software root) with what buildout needs."""
    owner = config.software_root.stat()
    directory.mkdir(mode=0o755, exist_ok=True)
    _give_to(directory, owner)
    (directory / "extends-cache").mkdir(exist_ok=True)
    _give_to(directory / "extends-cache", owner)
    profile = directory / "buildout.cfg"
    if not profile.exists():  # a hand-edited one is kept
        text = buildout_cfg(url, config.shared_part_list, config.build_time_part_list)
        atomic_write(profile, text, 0o644)
        _give_to(profile, owner)
    _copy_netrc(directory, owner)


def _copy_netrc(directory: Path, owner: os.stat_result) -> None:
    """Buildout runs with HOME = S, so the owner's download credentials are copied there."""
    copy = directory / ".netrc"
    try:
        source = Path(pwd.getpwuid(owner.st_uid).pw_dir) / ".netrc"
        content = source.read_bytes()
    except (KeyError, OSError):
        copy.unlink(missing_ok=True)
        return
    atomic_write(copy, content, 0o600)
    _give_to(copy, owner)


def remove_tree(directory: Path) -> None:
    """Remove a software directory even where a build left read-only entries."""
    for root, dirs, _ in os.walk(directory):
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IRWXU)
    shutil.rmtree(directory)


@contextlib.contextmanager
def software_lock(config: NodeConfig, url: str, cancel: threading.Event) -> Iterator[int]:
    """Hold `<software_root>/.slapgrid/locks/<md5>.lock`, waiting for another run's build.

    A plain `flock` whose descriptor is handed to buildout: if the agent is killed, its
    orphaned buildout keeps the lock until it exits, so a new run cannot build the same
    directory at the same time. (`filelock` keeps its descriptor private.)
    """
    path = layout.software_lock(config.software_root, url)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        waiting = False
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    log.info("another run is building %s: waiting", url, extra={"software": url})
                    waiting = True
                if cancel.wait(LOCK_POLL):
                    raise Cancelled(f"stopped while waiting for the lock of {url}") from None
        yield descriptor
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class ReleaseOutcome:
    """What one action did to one release, for the run record and the exit status."""

    action: Action
    ok: bool
    detail: str = ""
    origin: str = ""  # a release installed: "from cache", or "built: <why not>"


@dataclass
class SoftwareRun:
    """One `slapgrid software` run: what it needs to act, shared by its worker threads."""

    config: NodeConfig
    client: SoftwareClient
    store: StateStore
    force: bool
    console: Callable[[str], None] | None
    cancel: threading.Event

    def execute(self, action: Action) -> ReleaseOutcome:
        url = action.target
        try:
            if action.kind == Kind.BUILD:
                return self.build(action)
            if action.kind == Kind.REMOVE_SOFTWARE:
                return self.remove(action)
        except Cancelled as exc:
            log.info("%s", exc, extra={"software": url})
            return ReleaseOutcome(action, False, str(exc))
        except SlapgridError as exc:
            return self.fail(action, exc)
        except Exception as exc:  # a bug must not stop the other releases
            log.exception("unexpected error while processing %s", url, extra={"software": url})
            return self.fail(action, exc)
        if action.kind == Kind.ERROR:
            return self.fail(action, SlapgridError(f"{url}: {action.reason}"))
        if action.kind == Kind.WAIT:
            log.info("not retrying %s yet: %s", url, action.reason, extra={"software": url})
            return ReleaseOutcome(action, False, action.reason)
        log.debug("%s: %s", url, action.reason, extra={"software": url})
        return ReleaseOutcome(action, True, action.reason)

    def output(self, url: str) -> Callable[[str], None]:
        """Each build line with the release's short hash: parallel builds interleave."""
        prefix = f"[{software_hash(url)[:8]}] "
        if self.console is not None:
            return lambda line: self.console(prefix + line)  # type: ignore[misc]
        return lambda line: log.info("%s%s", prefix, line, extra={"software": url})

    def build(self, action: Action) -> ReleaseOutcome:
        url = action.target
        directory = layout.software_dir(self.config.software_root, url)
        with software_lock(self.config, url, self.cancel) as lock:
            if (directory / layout.COMPLETED).exists() and not self.force:
                log.info("%s was built by another run meanwhile", url, extra={"software": url})
                return ReleaseOutcome(action, True, "built by another run")
            if self.cancel.is_set():
                raise Cancelled(f"stopped before building {url}")
            check_free_space(
                directory, self.config.software_min_free_space, "software_min_free_space"
            )
            log.info("installing %s in %s (%s)", url, directory, action.reason)
            started = time.monotonic()
            with contextlib.suppress(NotFoundError):
                self.client.building_software_release(url)
            (directory / layout.COMPLETED).unlink(missing_ok=True)
            settings = CacheSettings(self.config.extra)
            origin = cache.before_build(settings, url, directory)
            if not origin.from_cache:
                self.build_from_source(url, directory, lock, buildout_arguments(settings))
                cache.after_build(settings, url, directory)
            self.client.available_software_release(url)
            atomic_write(directory / layout.COMPLETED, time.asctime() + "\n", 0o644)
        duration = time.monotonic() - started
        self.store.clear_failure(url)
        self.store.record_origin(url, origin.describe())
        log.info("%s: %s in %.1f s", url, origin.describe(), duration, extra={"software": url})
        return ReleaseOutcome(
            action, True, f"installed in {duration:.1f} s", origin=origin.describe()
        )

    def build_from_source(
        self, url: str, directory: Path, lock: int, arguments: Sequence[str]
    ) -> None:
        prepare_directory(self.config, directory, url)
        log_file = layout.build_log(directory)
        log_file.parent.mkdir(exist_ok=True)
        rotate(log_file, 0, 1)  # the previous build's log is kept as build.log.1
        build_software(
            self.config,
            directory,
            force=self.force,
            output=self.output(url),
            log_file=log_file,
            cancel=self.cancel,
            pass_fds=(lock,),
            extra_arguments=arguments,
        )

    def remove(self, action: Action) -> ReleaseOutcome:
        url = action.target
        if action.cause != Cause.ALREADY_GONE:  # e.g. a URL refused, so never built
            directory = layout.software_dir(self.config.software_root, url)
            with software_lock(self.config, url, self.cancel):
                if directory.exists():
                    log.info("removing %s (%s)", directory, url, extra={"software": url})
                    remove_tree(directory)
        self.client.destroyed_software_release(url)
        self.store.clear_failure(url)
        return ReleaseOutcome(action, True, "removed")

    def fail(self, action: Action, error: BaseException) -> ReleaseOutcome:
        url = action.target
        if self.cancel.is_set():  # stopped on purpose: not a failure to remember or report
            log.info("%s: interrupted, left for the next run", url, extra={"software": url})
            return ReleaseOutcome(action, False, "interrupted")
        message = error.report if isinstance(error, BuildoutError) else str(error)
        summary = str(error) or type(error).__name__
        if isinstance(error, BuildoutError):  # why, and where the whole story is
            build_log = layout.build_log(layout.software_dir(self.config.software_root, url))
            summary = f"{error.cause or error} (see {build_log})"
        log.error("%s: %s", url, summary, extra={"software": url})
        self.store.record_failure(url, f"{error}\n{summary}")
        try:
            self.client.software_release_error(url, message)
        except SlapError as exc:
            log.warning("could not report the error of %s: %s", url, exc)
        return ReleaseOutcome(action, False, str(error))


def plan_releases(
    config: NodeConfig,
    computer: Computer,
    *,
    force: bool = False,
    only_sr: Iterable[str] = (),
    store: StateStore | None = None,
) -> list[Action]:
    """What a software run would do, and why; reads the disk, changes nothing."""
    releases = select_releases(computer.software_releases, only_sr)
    listed = {software_hash(release.url) for release in releases}
    if unknown := [e for e in only_sr if e and not {e, software_hash(e)} & listed]:
        raise ConfigError(f"option --only-sr: the master does not list {', '.join(unknown)} here")
    failures = (store or StateStore(config.software_root)).failures()
    observed = observe_releases(config, releases)
    actions = plan_software(releases, observed, failures, time.time(), force=force)
    return [with_cache_note(config, action, observed) for action in actions]


def with_cache_note(
    config: NodeConfig, action: Action, observed: dict[str, SoftwareObservation]
) -> Action:
    """A build's reason says whether the binary cache is tried first, or why not."""
    if action.kind != Kind.BUILD:
        return action
    exists = observed[action.target].exists
    note = cache_decisions.plan_note(CacheSettings(config.extra), action.target, exists)
    return dataclasses.replace(action, reason=f"{action.reason}; {note}")


def run_software(
    config: NodeConfig,
    client: SoftwareClient,
    *,
    only_sr: Iterable[str] = (),
    force: bool = False,
    console: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Process every Software Release the master lists; OK if all succeeded, else FAILED.

    `console` gets each line of build output (else logged); `cancel` kills running builds.
    """
    store, computer = StateStore(config.software_root), client.computer()
    if not only_sr:  # releases the master dropped: their failures are retried no more
        store.keep_failures({release.url for release in computer.software_releases})
    actions = plan_releases(config, computer, force=force, only_sr=only_sr, store=store)
    run = SoftwareRun(config, client, store, force, console, cancel or threading.Event())
    workers = max(1, min(config.parallel_jobs, sum(action.is_work for action in actions)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="software") as pool:
        outcomes = list(pool.map(run.execute, actions))
    store.record_run(
        "software",
        {
            "finished": time.time(),
            "actions": [
                {
                    "kind": str(outcome.action.kind),
                    "target": outcome.action.target,
                    "reason": outcome.action.reason,
                    "ok": outcome.ok,
                    "detail": outcome.detail,
                    "origin": outcome.origin,
                }
                for outcome in outcomes
            ],
        },
    )
    failed = sum(not outcome.ok for outcome in outcomes)
    return RunResult(
        ExitStatus.FAILED if failed else ExitStatus.OK,
        {"done": sum(o.ok and o.action.is_work for o in outcomes), "failed": failed},
        built=any(o.ok and o.action.kind == Kind.BUILD for o in outcomes),
        failures=store.failures(),
    )
