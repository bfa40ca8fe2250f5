"""Usage of partitions for `slapgrid report`: measured with psutil, or written by the instance.

Two sources end in one TioXML journal (one `useComputer` per run):

* measurements of every busy partition: CPU time and resident memory of its processes (the
  supervisord group's pids and their descendants, plus, in root mode, every process of the
  partition's own user), and the disk space of its directory;
* usage documents the instance writes itself (its `etc/report/*` scripts, run here first):
  `<consumption>` files in `P/var/xml_report/` and `IR/var/xml_report/<pid>/`, and ready
  journals in `IR/var/xml_report/<computer id>/`.

Documents are validated before use and deleted only once the master accepted the journal, so
a failed send loses nothing. Building the journal is pure (`usage_movements`, `parse_*`,
`build_journal`); measuring and file handling are separate.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path

import psutil
from lxml import etree

from slapgrid.errors import SlapgridError
from slapgrid.node.identity import home_of
from slapgrid.node.process import ProcessError, run
from slapgrid.slap.errors import ProtocolError
from slapgrid.slap.marshal import parse_xml

log = logging.getLogger(__name__)

CPU, MEMORY, DISK, PROCESSES = "CPU Consumption", "Memory Usage", "Disk Usage", "Process Count"
REPORT_DIR = ("var", "xml_report")
"""Where an instance drops its usage documents, relative to its partition or the root."""
MAX_REPORT_BYTES = 1 << 20
SCRIPT_TIMEOUT = 300.0
OUTPUT_TAIL = 2000


class InvalidReport(SlapgridError):
    """A usage document, or the journal built from them, does not match its schema."""


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class Movement:
    """One `<movement>`: a quantity of one resource used by one partition."""

    resource: str
    quantity: str  # xs:float, as text: instance-written values are passed on unchanged
    reference: str | None = None  # the partition id once attributed
    title: str | None = None
    price: str = "0.00"
    vat: str = "None"
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Usage:
    """What a partition used at measurement time (CPU time is cumulative, of live processes)."""

    partition_id: str
    cpu_seconds: float
    memory_bytes: int
    process_count: int
    disk_bytes: int


def usage_movements(usage: Usage) -> list[Movement]:
    """The four measured movements of a partition, units in title and category."""
    measured = (
        (CPU, f"{usage.cpu_seconds:.2f}", "CPU time (user + system), seconds", "unit/second"),
        (MEMORY, str(usage.memory_bytes), "Resident memory, bytes", "unit/byte"),
        (DISK, str(usage.disk_bytes), "Disk space of the partition, bytes", "unit/byte"),
        (PROCESSES, str(usage.process_count), "Processes running", "unit/process"),
    )
    return [
        Movement(resource, quantity, usage.partition_id, title, categories=(unit,))
        for resource, quantity, title, unit in measured
    ]


@cache
def _schema(name: str, package: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.fromstring(resources.files(package).joinpath(name).read_bytes()))


def partition_schema() -> etree.XMLSchema:
    return _schema("partition_consumption.xsd", "slapgrid.node.report")


def computer_schema() -> etree.XMLSchema:
    """The journal schema the embedded master validates with: one file, shared."""
    return _schema("computer_consumption.xsd", "slapgrid.master")


def _validated(data: bytes | str, schema: etree.XMLSchema, what: str) -> etree._Element:
    try:
        root = parse_xml(data, what=what, max_bytes=MAX_REPORT_BYTES)
    except ProtocolError as exc:
        raise InvalidReport(str(exc)) from None
    return _check(root, schema, what)


def _check(root: etree._Element, schema: etree.XMLSchema, what: str) -> etree._Element:
    if not schema.validate(root):
        error = schema.error_log.last_error
        detail = f"line {error.line}: {error.message}" if error else "schema mismatch"
        raise InvalidReport(f"{what} is invalid: {detail}")
    return root


def parse_consumption(
    data: bytes | str, partition_id: str, what: str = "usage report"
) -> list[Movement]:
    """The movements of a `<consumption>` document, attributed to `partition_id`.

    The instance's own `<reference>` is replaced: a partition can only report for itself.
    """
    root = _validated(data, partition_schema(), what)
    movements = []
    for element in root.iterchildren("movement"):
        texts = {child.tag: (child.text or "") for child in element.iterchildren(tag=etree.Element)}
        movements.append(
            Movement(
                resource=texts["resource"],
                quantity=texts["quantity"].strip(),
                reference=partition_id,
                title=texts.get("title"),
                price=texts["price"].strip(),
                vat=texts["VAT"],
                categories=tuple(c.text or "" for c in element.iterchildren("category")),
            )
        )
    return movements


def parse_journal(data: bytes | str, what: str = "computer usage report") -> etree._Element:
    """A ready computer-level `<journal>` (validated)."""
    return _validated(data, computer_schema(), what)


def _child(parent: etree._Element, tag: str, text: str | None = "") -> etree._Element:
    element = etree.SubElement(parent, tag)
    element.text = text
    return element


def _movement(parent: etree._Element, movement: Movement) -> None:
    element = etree.SubElement(parent, "movement")
    _child(element, "resource", movement.resource)
    if movement.title is not None:
        _child(element, "title", movement.title)
    if movement.reference is not None:
        _child(element, "reference", movement.reference)
    _child(element, "quantity", movement.quantity)
    _child(element, "price", movement.price)
    _child(element, "VAT", movement.vat)
    for category in movement.categories:
        _child(element, "category", category)


def build_journal(
    computer_id: str,
    movements: Iterable[Movement],
    *,
    stop_date: datetime,
    journals: Iterable[bytes | str] = (),
) -> str:
    """One TioXML journal, on one line: a `Sale Packing List` transaction holding
    `movements`, followed by the transactions of the ready computer-level `journals`.

    Text is escaped by lxml; the result is validated and `InvalidReport` names the problem.
    """
    journal = etree.Element("journal")
    movements = list(movements)
    try:
        if movements:
            transaction = etree.SubElement(journal, "transaction", type="Sale Packing List")
            _child(transaction, "title", "Resource consumptions")
            _child(transaction, "start_date")
            _child(transaction, "stop_date", stop_date.strftime("%Y-%m-%d at %H:%M:%S"))
            _child(transaction, "reference", computer_id)
            for tag in ("currency", "payment_mode", "category"):
                _child(transaction, tag)
            arrow = etree.SubElement(transaction, "arrow", type="Administration")
            _child(arrow, "source")
            _child(arrow, "destination")
            for movement in movements:
                _movement(transaction, movement)
        for document in journals:
            journal.extend(parse_journal(document).iterchildren("transaction"))
    except ValueError as exc:  # a character XML cannot carry
        raise InvalidReport(f"usage journal cannot be written: {exc}") from None
    _check(journal, computer_schema(), "usage journal")
    return '<?xml version="1.0"?>' + etree.tostring(journal, encoding="unicode")


# --------------------------------------------------------------------------- measuring


def dedicated_uid(partition_path: Path) -> int | None:
    """The partition's own uid when it has one (root mode), else None.

    In rootless mode every partition belongs to the agent's user: attributing by uid would
    count the agent and every other partition.
    """
    try:
        uid = partition_path.stat().st_uid
    except OSError:
        return None
    return None if uid in (0, os.geteuid()) else uid


@dataclass(frozen=True)
class ProcessTable:
    """One pass over the process table, shared by every partition a run measures."""

    processes: Mapping[int, psutil.Process]
    children: Mapping[int, tuple[int, ...]]
    by_uid: Mapping[int, tuple[int, ...]]

    @classmethod
    def snapshot(cls) -> ProcessTable:
        processes: dict[int, psutil.Process] = {}
        children: dict[int, list[int]] = defaultdict(list)
        by_uid: dict[int, list[int]] = defaultdict(list)
        for process in psutil.process_iter(["ppid", "uids"]):
            if process.pid == os.getpid():
                continue
            processes[process.pid] = process
            ppid, uids = process.info["ppid"], process.info["uids"]
            if ppid is not None:
                children[ppid].append(process.pid)
            for uid in {uids.real, uids.effective} if uids is not None else ():
                by_uid[uid].append(process.pid)
        return cls(
            processes,
            {pid: tuple(kids) for pid, kids in children.items()},
            {uid: tuple(pids) for uid, pids in by_uid.items()},
        )

    def partition_processes(
        self, root_pids: Iterable[int], uid: int | None = None
    ) -> list[psutil.Process]:
        """`root_pids` and their descendants, plus every process of `uid`."""
        found: set[int] = set(self.by_uid.get(uid, ())) if uid is not None else set()
        pending = [pid for pid in root_pids if pid in self.processes]
        while pending:
            pid = pending.pop()
            if pid not in found:
                found.add(pid)
                pending.extend(self.children.get(pid, ()))
        return [self.processes[pid] for pid in sorted(found)]


def measure_processes(processes: Iterable[psutil.Process]) -> tuple[float, int, int]:
    """(CPU seconds, RSS bytes, count) of the processes still alive.

    CPU includes the reaped children of each process, which are no longer counted apart.
    """
    cpu, rss, count = 0.0, 0, 0
    for process in processes:
        try:
            with process.oneshot():
                times, memory = process.cpu_times(), process.memory_info()
        except psutil.Error:  # gone, zombie, or not ours to read
            continue
        cpu += times.user + times.system
        cpu += getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
        rss += memory.rss
        count += 1
    return cpu, rss, count


def disk_usage(path: Path) -> int:
    """Bytes allocated under `path` (like `du -s`): symlinks not followed, hard links once."""
    try:
        top = os.lstat(path)
    except OSError:
        return 0
    total = _allocated(top)
    if not stat.S_ISDIR(top.st_mode):
        return total
    seen: set[tuple[int, int]] = set()
    pending = [os.fspath(path)]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:  # unreadable or gone: count what can be seen
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    pending.append(entry.path)
                elif info.st_nlink > 1:
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                total += _allocated(info)
    return total


def _allocated(info: os.stat_result) -> int:
    blocks = getattr(info, "st_blocks", None)
    return blocks * 512 if blocks is not None else info.st_size


def measure_partition(
    partition_id: str, path: Path, root_pids: Iterable[int], table: ProcessTable | None = None
) -> Usage:
    """`table`: a snapshot shared by the partitions of a run (taken now if not given)."""
    table = table or ProcessTable.snapshot()
    processes = table.partition_processes(root_pids, dedicated_uid(path))
    cpu, rss, count = measure_processes(processes)
    return Usage(partition_id, cpu, rss, count, disk_usage(path))


# --------------------------------------------------------------------------- report scripts


def run_instance_script(
    argv: Sequence[str], partition_path: Path, *, cwd: Path, timeout: float
) -> str | None:
    """Run a script the instance ships, as the partition owner (HOME = the owner's home,
    clean environment); None when it succeeded, else why not, with the end of its output."""
    script = argv[0]
    try:
        result = run(
            argv,
            cwd=cwd,
            home=home_of(partition_path),
            owner_of=partition_path,
            timeout=timeout,
            output=lambda line: log.debug("%s: %s", script, line),
        )
    except (ProcessError, OSError) as exc:
        return str(exc)
    if result.ok:
        return None
    why = f"killed after {timeout:g} s" if result.timed_out else f"exit code {result.returncode}"
    output = result.tail.strip()[-OUTPUT_TAIL:]
    return why + (f", output:\n{output}" if output else "")


def run_report_scripts(partition_path: Path, timeout: float = SCRIPT_TIMEOUT) -> list[str]:
    """Run each entry of `P/etc/report/`; one message per failure.

    Each gets one argument, an unused name under `P/var/xml_report/` to write its report to
    (the directory is the instance's to create), and runs in `P/etc/report`.
    """
    directory = partition_path / "etc" / "report"
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        return [f"Cannot list {directory}: {exc.strerror}."]
    failures = []
    for name in names:
        output = partition_path.joinpath(*REPORT_DIR) / f"slapreport.{secrets.token_hex(4)}"
        while output.exists():
            output = output.with_name(f"slapreport.{secrets.token_hex(4)}")
        script = directory / name
        problem = run_instance_script(
            [str(script), str(output)], partition_path, cwd=directory, timeout=timeout
        )
        if problem is None:
            log.info("Report script %s succeeded", script)
            continue
        log.warning("Report script %s failed: %s", script, problem.splitlines()[0])
        failures.append(f"Script {name!r} failed ({problem}).")
    return failures


# --------------------------------------------------------------------------- report files


@dataclass(frozen=True)
class ReportFile:
    """A valid usage document found on disk, deleted once the master has accepted it."""

    base: Path
    parts: tuple[str, ...]  # directories below `base`, walked without following symlinks
    name: str
    inode: int
    partition_id: str | None  # None: a computer-level journal
    movements: tuple[Movement, ...] = ()
    journal: bytes | None = None

    @property
    def path(self) -> Path:
        return self.base.joinpath(*self.parts, self.name)


def _open_dir(base: Path, parts: Sequence[str]) -> int | None:
    """A descriptor of `base/parts…`, reached without following a symlink below `base`."""
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    for part in parts:
        try:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                log.warning(
                    "Ignoring %s: not a directory (symlinks are not followed)",
                    base.joinpath(*parts),
                )
            return None
        finally:
            os.close(fd)
        fd = child
    return fd


def _read_regular(dir_fd: int, name: str) -> tuple[bytes, int]:
    """Content and inode of a regular file (never a symlink, FIFO or device), size-bounded."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidReport("not a regular file")
        if info.st_size > MAX_REPORT_BYTES:
            raise InvalidReport(f"{info.st_size} bytes, more than the {MAX_REPORT_BYTES} allowed")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(MAX_REPORT_BYTES + 1), info.st_ino
    finally:
        os.close(fd)


def collect_reports(base: Path, parts: Sequence[str], partition_id: str | None) -> list[ReportFile]:
    """Valid documents of one directory: `<consumption>` of `partition_id`, or (None) ready
    computer journals. Invalid files stay in place, with a log line saying why."""
    dir_fd = _open_dir(base, parts)
    if dir_fd is None:
        return []
    found = []
    try:
        for name in sorted(os.listdir(dir_fd)):
            path = base.joinpath(*parts, name)
            try:
                data, inode = _read_regular(dir_fd, name)
                if partition_id is None:
                    parse_journal(data, str(path))
                    found.append(ReportFile(base, tuple(parts), name, inode, None, journal=data))
                else:
                    movements = tuple(parse_consumption(data, partition_id, str(path)))
                    found.append(
                        ReportFile(base, tuple(parts), name, inode, partition_id, movements)
                    )
            except (InvalidReport, OSError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                log.warning("Leaving usage report %s in place: %s", path, reason)
    finally:
        os.close(dir_fd)
    return found


def partition_report_dirs(
    instance_root: Path, partition_path: Path, partition_id: str
) -> list[tuple[Path, tuple[str, ...]]]:
    """Where the usage documents of a partition are looked for."""
    return [(partition_path, REPORT_DIR), (instance_root, (*REPORT_DIR, partition_id))]


def delete_reports(files: Iterable[ReportFile]) -> int:
    """Delete files that were sent, unless replaced since they were read; how many went."""
    deleted = 0
    for file in files:
        dir_fd = _open_dir(file.base, file.parts)
        if dir_fd is None:
            continue
        try:
            if os.stat(file.name, dir_fd=dir_fd, follow_symlinks=False).st_ino == file.inode:
                os.unlink(file.name, dir_fd=dir_fd)
                deleted += 1
        except OSError as exc:
            log.warning("Cannot delete sent usage report %s: %s", file.path, exc.strerror)
        finally:
            os.close(dir_fd)
    return deleted
