"""Benchmark: a fleet of nodes on one master (issue 15), every node simulated in one process.

`--nodes` computers of `--partitions` partitions each, with a software release supplied, are
registered through the store's own transitions before the master starts, many per
transaction (over HTTP, one by one, 10,000 take many minutes: the first master registers a
few that way for the rate). The master then runs as `slapgrid master start`
in its own process, over plain HTTP on 127.0.0.1 (`--insecure`): with TLS each of the
10,000 nodes would need its own certificate, the handshakes of 20,000 connections would
dominate the ramp, and asyncio's TLS layer (Python) would make the load generator the
bottleneck; bench_master.py measures what TLS costs.

Each node, as our agent does, holds a long poll on the change feed (re-armed as soon as it
returns, `--poll-timeout` below the master's keep-alive), fetches its getFullComputerInformation
every `--interval` seconds (spread uniformly, with `If-None-Match`), and again at once
after a wake-up. Users request instances at `--rate` per second, each on a random node (SLA
`computer_guid`): the wake-up latency runs from the request sent to that node's long poll
answered. The load generator is one asyncio process speaking raw HTTP/1.1, each node with
its own keep-alive connections.

Configurations: SQLite with 1 worker, PostgreSQL (a throw-away cluster that fsyncs) with 1, 2
and 4 workers, those over 1 only where `slapgrid master start` has `--workers`. Reported
for each: fetch, wake-up and request latencies, master RSS per connected node, errors, and
the CPU of the master, of PostgreSQL and of the load generator itself. Targets: fetch
p99 < 50 ms, wake-up p99 < 1 s, no errors. The reference `slapos proxy` has no change feed:
only the fetch load of `--reference-nodes` nodes is measured on it (not with `--smoke`).

`--smoke`: 300 nodes for 20 s on SQLite and PostgreSQL with 1 worker; fails on errors only.
Run: `.venv/bin/python benchmarks/bench_fleet.py [--smoke]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.orm import Session

from slapgrid.master import computers
from slapgrid.master.collector import pace_collections
from slapgrid.master.connections import raise_file_limit
from slapgrid.master.inputs import parse_format
from slapgrid.master.storage import MasterStore
from slapgrid.master.transaction import Tx
from slapgrid.slap import changes, marshal
from slapgrid.slap.documents import AVAILABLE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from slap_load import (
    SOFTWARE,
    Connection,
    computer_definition,
    encode_form,
    find_reference_venv,
    percentile,
    request_form,
)

import reference_env
from support.addresses import free_port
from support.postgres import Cluster, Unavailable

NODE_HOSTS = 8  # loopback addresses the nodes' connections come from (ephemeral ports)
INSTANCES = 8  # instances users keep per computer (fewer than its partitions): then updates
REQUEST_TIMEOUT = 30.0  # seconds before a fetch or a request counts as an error
DRAIN = 3.0  # seconds after the last answer to a request for the wake-up it causes
SETTLE = 10.0  # seconds between the ramp and the window: the master answers its backlog
FETCH_TARGET_MS, WAKE_TARGET_MS = 50.0, 1000.0
REGISTERED_TOGETHER = 250  # computers per transaction of the set-up
POSTGRES_CONNECTIONS = 600  # 4 workers' pools, the set-up's and a margin
RAMP_TIMEOUT = 180.0  # seconds the nodes may take to connect before the window begins
MASTER_START = 900.0  # seconds a master of the whole fleet may take to answer
STARTED = time.monotonic()


@dataclass(frozen=True)
class Setup:
    backend: str  # "sqlite" or "postgresql"
    workers: int

    @property
    def name(self) -> str:
        return f"{'SQLite' if self.backend == 'sqlite' else 'PostgreSQL'} x{self.workers}"


@dataclass
class Figures:
    """What one run of the fleet measured (latencies in seconds, within the window)."""

    ramp: float = 0.0  # seconds until every node had its document and its first poll
    ready: int = 0  # the nodes that had, when the window began (all but on time-out)
    window: float = 0.0
    fetches: list[float] = field(default_factory=list)  # the periodic ones
    statuses: Counter[int] = field(default_factory=Counter)  # of the periodic fetches
    wake_fetches: list[float] = field(default_factory=list)  # those right after a wake-up
    wakes: list[float] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    load: tuple[float, float] = (0.0, 0.0)  # the machine's load average, before and after
    stray_wakes: int = 0  # wake-ups no request explains
    generator_cpu: float = 0.0  # % of one core
    master_cpu: float = 0.0
    database_cpu: float | None = None
    rss_per_node: float = 0.0  # KiB


# --- the master and its database ------------------------------------------------------------


def register(database: str, first: int, count: int, partitions: int) -> None:
    """Register computers `first`…`first + count - 1` as `slapos format` would, with the
    software release supplied (a process of the set-up's pool).

    `REGISTERED_TOGETHER` computers per transaction, through the store's own transitions:
    one transaction each, as over HTTP, takes minutes for 10,000. The store's generation
    bump is left out (the `Tx` is ours): a new computer gets its generation when created,
    and the master reads every one when it starts.
    """
    store = MasterStore(database)

    def chunk(start: int, stop: int) -> Callable[[Session], None]:
        def work(session: Session) -> None:
            tx = Tx(session)
            for index in range(start, stop):
                definition = computer_definition(f"COMP-{index}", partitions)
                computers.load_configuration(tx, parse_format(definition))
                computers.supply(tx, f"COMP-{index}", SOFTWARE, AVAILABLE)

        return work

    try:
        for start in range(first, first + count, REGISTERED_TOGETHER):
            store.write_with(chunk(start, min(start + REGISTERED_TOGETHER, first + count)))
    finally:
        store.close()


def workers_supported() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "slapgrid", "master", "start", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    return "--workers" in done.stdout


def newest_child() -> psutil.Process:
    """The server process `reference_env.serving` has just started."""
    return max(psutil.Process().children(), key=lambda child: child.create_time())


@contextlib.contextmanager
def master(database: str, workdir: Path, workers: int | None) -> Iterator[str]:
    """`slapgrid master start --insecure` on `database` (with `--workers` unless None)."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "slapgrid", "master", "start", "--insecure"),
        *("--host", "127.0.0.1", "--port", str(port), "--database", database),
        *("--pki-dir", str(workdir / "pki"), "--cache-dir", str(workdir / "cache")),
        *(() if workers is None else ("--workers", str(workers))),
    ]
    url = f"http://127.0.0.1:{port}/"
    log = workdir / "master.log"
    with reference_env.serving(command, url, log, "getHateoasUrl", start_timeout=MASTER_START):
        yield url


class Probe:
    """CPU and memory of the master's process tree, and CPU of the database's processes."""

    def __init__(self, server: psutil.Process, database_account: str | None) -> None:
        self.server = server
        self.database_account = database_account

    def tree(self) -> list[psutil.Process]:
        return [self.server, *self.server.children(recursive=True)]

    def rss(self) -> int:
        """Bytes resident in the master's processes."""
        return sum(_quietly(lambda p: p.memory_info().rss, p) for p in self.tree())

    def cpu(self) -> tuple[float, float]:
        """Seconds of CPU used so far: (master, database)."""
        database = 0.0
        if self.database_account:
            for process in psutil.process_iter(["username", "cpu_times"]):
                if process.info["username"] == self.database_account and process.info["cpu_times"]:
                    database += process.info["cpu_times"].user + process.info["cpu_times"].system
        return sum(_quietly(_cpu_seconds, p) for p in self.tree()), database

    def settle(self, timeout: float = 600.0) -> None:
        """Wait until the master is idle (its start, or the registrations over HTTP)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = self.cpu()[0]
            time.sleep(1.0)
            if self.cpu()[0] - before < 0.1:
                return


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _quietly(measure: Callable[[psutil.Process], float], process: psutil.Process) -> float:
    try:
        return measure(process)
    except psutil.NoSuchProcess:
        return 0


# --- the load generator ---------------------------------------------------------------------


class Fleet:
    """Nodes and users against one master, in this process's event loop."""

    def __init__(
        self, url: str, count: int, args: argparse.Namespace, *, feed: bool, keep_alive: bool
    ) -> None:
        self.url, self.count, self.args, self.feed = url, count, args, feed
        self.keep_alive = keep_alive  # the nodes keep their fetch connections open
        self.figures = Figures()
        self.measuring = False
        self.pending: dict[str, list[float]] = {}  # request send times, by computer
        self.requested = [0] * count
        self.user_connections: list[Connection] = []
        self.ready = 0
        self.in_flight = 0  # requests sent and not answered yet
        self._tasks: set[asyncio.Task[None]] = set()

    def error(self, what: str) -> None:
        self.figures.errors[what] += 1

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def woken(self, computer: str, at: float) -> None:
        """A node's long poll answered a new generation: the requests it answers."""
        sent = self.pending.pop(computer, [])
        self.figures.wakes.extend(at - s for s in sent)
        self.figures.stray_wakes += not sent

    async def users(self) -> None:
        loop = asyncio.get_running_loop()
        at = loop.time()
        while True:
            at += 1 / self.args.rate
            await asyncio.sleep(at - loop.time())
            self.spawn(self.request())

    async def request(self) -> None:
        """One user's request of an instance on a random node (a new one, or an update)."""
        index = random.randrange(self.count)
        computer, n = f"COMP-{index}", self.requested[index]
        self.requested[index] += 1
        form = request_form(f"{computer}-instance-{n % INSTANCES}", {"n": str(n)}, computer)
        body = encode_form(form)
        connection = self.user_connections.pop() if self.user_connections else Connection(self.url)
        sent = time.perf_counter()
        pending = self.pending.setdefault(computer, [])
        pending.append(sent)
        self.in_flight += 1
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status, _, _ = await connection.request("POST", "/requestComputerPartition", body)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            connection.close()
            self.error(f"request: {type(exc).__name__}")
            pending.remove(sent)
            return
        finally:
            self.in_flight -= 1
        self.user_connections.append(connection)
        if status != 200:
            self.error(f"request: HTTP {status}")
            pending.remove(sent)
        elif self.measuring:
            self.figures.requests.append(time.perf_counter() - sent)

    async def run(self, probe: Probe | None, window: float) -> Figures:
        """Connect every node (ramp), then measure for `window` seconds, users requesting."""
        figures = self.figures
        rss_before = probe.rss() if probe else 0
        began = time.perf_counter()
        nodes = [Node(self, index) for index in range(self.count)]
        for node in nodes:
            self.spawn(node.run())
            await asyncio.sleep(1 / self.args.ramp_rate)
        while self.ready < self.count and time.perf_counter() - began < RAMP_TIMEOUT:
            await asyncio.sleep(0.1)
        figures.ramp, figures.ready = time.perf_counter() - began, self.ready
        # the nodes' objects are scanned by no garbage collection from now on, and the
        # polls' churn collected on the clock (as in the master): a collection of the
        # generator's would stall its loop, and count as the master's latency
        collector = asyncio.ensure_future(pace_collections())
        await asyncio.sleep(SETTLE)
        load_before = os.getloadavg()[0]
        me = psutil.Process()
        generator_before = _cpu_seconds(me)
        master_before, database_before = probe.cpu() if probe else (0.0, 0.0)
        self.measuring, started = True, time.perf_counter()
        users = asyncio.ensure_future(self.users()) if self.args.rate and self.feed else None
        await asyncio.sleep(window)
        self.measuring = False
        figures.window = time.perf_counter() - started
        figures.load = (load_before, os.getloadavg()[0])
        figures.generator_cpu = (_cpu_seconds(me) - generator_before) / figures.window * 100
        if probe:
            master_after, database_after = probe.cpu()
            figures.master_cpu = (master_after - master_before) / figures.window * 100
            if probe.database_account:
                figures.database_cpu = (database_after - database_before) / figures.window * 100
            figures.rss_per_node = (probe.rss() - rss_before) / self.count / 1024
        if users:
            users.cancel()
            while self.in_flight:  # each ends within REQUEST_TIMEOUT
                await asyncio.sleep(0.1)
            await asyncio.sleep(DRAIN)  # the wake-ups of the window's last requests
            missed = sum(len(sent) for sent in self.pending.values())
            if missed:
                figures.errors["no wake-up"] += missed
        collector.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for node in nodes:
            node.feed.close()
            node.fetcher.close()
        for connection in self.user_connections:
            connection.close()
        return figures


class Node:
    """One node: its long poll on the change feed and its fetches of its document."""

    def __init__(self, fleet: Fleet, index: int) -> None:
        self.fleet = fleet
        self.computer = f"COMP-{index}"
        host = f"127.0.0.{2 + index % NODE_HOSTS}"
        self.feed = Connection(fleet.url, local_host=host)
        self.fetcher = Connection(fleet.url, local_host=host)
        self.document = f"/getFullComputerInformation?computer_id={self.computer}"
        self.etag: str | None = None
        self.fetching = asyncio.Lock()

    async def run(self) -> None:
        fleet = self.fleet
        generation = await self.poll(changes.ANY_GENERATION) if fleet.feed else 0
        await self.fetch(None)
        fleet.ready += 1
        fleet.spawn(self.fetch_every(random.uniform(0, fleet.args.interval)))
        while fleet.feed:
            answered = await self.poll(generation)
            if answered != generation:
                generation = answered
                fleet.woken(self.computer, time.perf_counter())
                await self.fetch(fleet.figures.wake_fetches)

    async def poll(self, since: int) -> int:
        """The generation the feed answers (`since` again after an error, a second later)."""
        timeout = self.fleet.args.poll_timeout
        path = f"/{changes.CHANGES_PATH}?computer_id={self.computer}&since={since}"
        try:
            async with asyncio.timeout(timeout + REQUEST_TIMEOUT):
                status, _, body = await self.feed.request("GET", f"{path}&timeout={timeout:g}")
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            self.feed.close()
            self.fleet.error(f"long poll: {type(exc).__name__}")
        else:
            if status == 200:
                return changes.parse_generation(body)
            self.fleet.error(f"long poll: HTTP {status}")
        await asyncio.sleep(1)
        return since

    async def fetch_every(self, phase: float) -> None:
        loop = asyncio.get_running_loop()
        at = loop.time() + phase
        while True:
            await asyncio.sleep(at - loop.time())
            await self.fetch(self.fleet.figures.fetches)
            at += self.fleet.args.interval

    async def fetch(self, into: list[float] | None) -> None:
        """getFullComputerInformation with the ETag known; its latency into `into`."""
        fleet = self.fleet
        headers = f"If-None-Match: {self.etag}\r\n" if self.etag else ""
        if not fleet.keep_alive:
            headers += "Connection: close\r\n"
        async with self.fetching:
            counted = into is not None and fleet.measuring  # a fetch begun in the window
            start = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status, fields, _ = await self.fetcher.request(
                        "GET", self.document, headers=headers
                    )
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                self.fetcher.close()
                fleet.error(f"fetch: {type(exc).__name__}")
                return
            elapsed = time.perf_counter() - start
        if status not in (200, 304):
            fleet.error(f"fetch: HTTP {status}")
            return
        self.etag = fields.get("etag", self.etag)
        if counted:
            assert into is not None
            into.append(elapsed)
            if into is fleet.figures.fetches:
                fleet.figures.statuses[status] += 1


# --- the run -------------------------------------------------------------------------------


def prepare(args: argparse.Namespace, sqlite: str | None, postgres: str | None) -> dict[str, float]:
    """Register the fleet in each database, all at once (PostgreSQL by two processes):
    registrations per second, by backend."""
    # SQLite takes one writer at a time; PostgreSQL two processes, each half the fleet
    parts = {
        "sqlite": [(sqlite, 0, args.nodes)] if sqlite else [],
        "postgresql": [(postgres, first, count) for first, count in halves(args.nodes)]
        if postgres
        else [],
    }
    for url in (sqlite, postgres):
        if url:
            MasterStore(url).close()  # the schema, before several processes write
    rates = {}
    with ProcessPoolExecutor(max_workers=3) as pool:
        started = time.perf_counter()
        jobs = {
            backend: [
                pool.submit(register, url, first, n, args.partitions) for url, first, n in part
            ]
            for backend, part in parts.items()
            if part
        }
        for backend, futures in jobs.items():
            for future in futures:
                future.result()
            rates[backend] = args.nodes / (time.perf_counter() - started)
    return rates


def halves(count: int) -> list[tuple[int, int]]:
    return [(0, count // 2), (count // 2, count - count // 2)]


def measure(
    setup: Setup,
    database: str,
    workdir: Path,
    args: argparse.Namespace,
    database_account: str | None,
    workers_flag: bool,
) -> Figures:
    directory = workdir / f"{setup.backend}-{setup.workers}"
    directory.mkdir()
    say(f"{setup.name}: master starting")
    with master(database, directory, setup.workers if workers_flag else None) as url:
        probe = Probe(newest_child(), database_account)
        probe.settle()
        if args.http_registrations:
            names = [f"HTTP-{index}" for index in range(args.http_registrations)]
            rate = asyncio.run(register_over_http(url, names, args.partitions))
            say(f"{setup.name}: {rate:.1f} registrations/s over HTTP, one after the other")
            args.http_registrations = 0  # once is enough
            probe.settle()
        say(f"{setup.name}: {args.nodes} nodes connecting")
        fleet = Fleet(url, args.nodes, args, feed=True, keep_alive=args.keep_alive)
        figures = asyncio.run(fleet.run(probe, args.duration))
    report({setup.name: figures})  # now: a long run that breaks later keeps these
    failures = Counter(
        line.split(": ", 1)[-1][:160]
        for line in (directory / "master.log").read_text(errors="replace").splitlines()
        if " ERROR " in line or " 500 " in line
    )
    for line, count in failures.most_common(5):  # what a 500 was, in the master's words
        say(f"{setup.name}: master log, {count} x {line}")
    return figures


async def register_over_http(url: str, names: list[str], partitions: int) -> float:
    """Register and supply these computers one after the other: registrations per second."""
    connection = Connection(url)
    started = time.perf_counter()
    for computer in names:
        xml = marshal.dumps(computer_definition(computer, partitions)).decode()
        calls = (
            ("loadComputerConfigurationFromXML", {"xml": xml}),
            ("supplySupply", {"url": SOFTWARE, "computer_id": computer, "state": "available"}),
        )
        for endpoint, form in calls:
            status, _, _ = await connection.request("POST", f"/{endpoint}", encode_form(form))
            if status != 200:
                raise RuntimeError(f"{endpoint} of {computer}: HTTP {status}")
    connection.close()
    return len(names) / (time.perf_counter() - started)


def measure_reference(venv: Path, args: argparse.Namespace) -> tuple[float, Figures]:
    """The fetch load alone (no change feed there) on `slapos proxy`, a smaller fleet."""
    count = args.reference_nodes
    with (
        tempfile.TemporaryDirectory(prefix="bench-fleet-ref-") as tmp,
        reference_env.reference_proxy(venv, Path(tmp), "COMP-0") as url,
    ):
        say(f"reference: registering {count} computers over HTTP")
        names = [f"COMP-{index}" for index in range(count)]
        rate = asyncio.run(register_over_http(url, names, args.partitions))
        probe = Probe(newest_child(), None)
        say(f"reference: {count} nodes fetching every {args.interval:g} s")
        fleet = Fleet(url, count, args, feed=False, keep_alive=args.keep_alive)
        return rate, asyncio.run(fleet.run(probe, args.reference_duration))


def say(text: str) -> None:
    """A progress line, with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - STARTED:5.0f} s] {text}", flush=True)


def ms(values: list[float]) -> str:
    return f"{percentile(values, 50):.1f} / {percentile(values, 99):.1f}"


def report(results: dict[str, Figures]) -> None:
    rows: list[tuple[str, Callable[[Figures], str]]] = [
        ("nodes ready / in (s)", lambda f: f"{f.ready} / {f.ramp:.0f}"),
        ("fetch p50 / p99 (ms)", lambda f: ms(f.fetches)),
        ("  fetches 200 / 304", lambda f: f"{f.statuses[200]} / {f.statuses[304]}"),
        ("wake-up p50 / p99 (ms)", lambda f: ms(f.wakes) if f.wakes else "-"),
        ("  fetch after it (ms)", lambda f: ms(f.wake_fetches) if f.wake_fetches else "-"),
        ("request p50 / p99 (ms)", lambda f: ms(f.requests) if f.requests else "-"),
        ("  requests/s", lambda f: f"{len(f.requests) / f.window:.1f}" if f.requests else "-"),
        ("master RSS/node (KiB)", lambda f: f"{f.rss_per_node:.1f}"),
        ("master CPU (% core)", lambda f: f"{f.master_cpu:.0f}"),
        (
            "PostgreSQL CPU (% core)",
            lambda f: "-" if f.database_cpu is None else f"{f.database_cpu:.0f}",
        ),
        ("generator CPU (% core)", lambda f: f"{f.generator_cpu:.0f}"),
        ("machine load, 1 min", lambda f: f"{f.load[0]:.1f} → {f.load[1]:.1f}"),
        ("stray wake-ups", lambda f: str(f.stray_wakes)),
        ("errors", lambda f: str(sum(f.errors.values()))),
    ]
    cells = [cell(f) for _, cell in rows for f in results.values()]
    width = max(len(text) + 2 for text in [*results, *cells])
    print(f"{'':<25}" + "".join(f"{name:>{width}}" for name in results))
    for label, cell in rows:
        print(f"{label:<25}" + "".join(f"{cell(f):>{width}}" for f in results.values()))
    for name, figures in results.items():
        if figures.errors:
            print(f"  {name} errors: {dict(figures.errors)}")


def verdicts(name: str, figures: Figures) -> str:
    fetch, wake = percentile(figures.fetches, 99), percentile(figures.wakes, 99)
    errors = sum(figures.errors.values())
    return (
        f"  {name:<16} fetch p99 {fetch:.1f} ms < {FETCH_TARGET_MS:g}: "
        f"{'met' if fetch < FETCH_TARGET_MS else 'NOT met'};  wake-up p99 {wake:.0f} ms "
        f"< {WAKE_TARGET_MS:g}: {'met' if wake < WAKE_TARGET_MS else 'NOT met'};  errors "
        f"{errors}: {'met' if not errors else 'NOT met'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=10, help="per computer")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds measured")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between fetches")
    parser.add_argument("--poll-timeout", type=float, default=50.0, help="long poll, seconds")
    parser.add_argument("--rate", type=float, default=50.0, help="user requests per second")
    parser.add_argument("--ramp-rate", type=float, default=500.0, help="nodes connecting/s")
    parser.add_argument(
        "--setups",
        help="backend:workers, comma-separated "
        "[sqlite:1,postgresql:1,postgresql:2,postgresql:4; --smoke: sqlite:1,postgresql:1]",
    )
    parser.add_argument(
        "--http-registrations",
        type=int,
        default=200,
        help="computers registered over HTTP on the first master, for the rate",
    )
    parser.add_argument("--reference-nodes", type=int, default=500)
    parser.add_argument("--reference-duration", type=float, default=60.0)
    parser.add_argument("--reference-venv", help="venv with slapos.core (default: .venv-ref)")
    parser.add_argument("--smoke", action="store_true", help="300 nodes, 20 s, 1 worker")
    args = parser.parse_args()
    # stopped by SIGTERM as by Ctrl-C: the throw-away cluster and directories are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.smoke:
        args.nodes, args.duration, args.interval, args.poll_timeout = 300, 20.0, 10.0, 10.0
        args.rate, args.http_registrations = min(args.rate, 20.0), 0
        args.setups = args.setups or "sqlite:1,postgresql:1"
    args.setups = args.setups or "sqlite:1,postgresql:1,postgresql:2,postgresql:4"
    setups = [
        Setup(backend, int(workers))
        for backend, _, workers in (item.partition(":") for item in args.setups.split(","))
    ]
    # each node holds two connections, and so does the master for it; one process may not
    # hold more descriptors than the hard limit (20,000 in some containers)
    limit = raise_file_limit()
    args.keep_alive = 2 * args.nodes + 1000 <= limit
    workers_flag = workers_supported()
    runnable = [s for s in setups if s.workers == 1 or workers_flag]
    for skipped in set(setups) - set(runnable):
        print(f"{skipped.name}: skipped, `slapgrid master start` has no --workers yet")
    print(
        f"fleet: {args.nodes} nodes x {args.partitions} partitions, long poll {args.poll_timeout:g}"
        f" s, fetch every {args.interval:g} s, users {args.rate:g} requests/s, measured "
        f"{args.duration:g} s; plain HTTP on 127.0.0.1 (--insecure); {os.cpu_count()} cores"
    )
    if not args.keep_alive:
        print(
            f"  open files are limited to {limit} per process: each fetch opens its own "
            "connection (`Connection: close`), the long polls stay kept alive"
        )
    results: dict[str, Figures] = {}
    failed: list[str] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fleet-")))
        cluster: Cluster | None = None
        if any(s.backend == "postgresql" for s in runnable):
            try:
                cluster = stack.enter_context(
                    Cluster(durable=True, max_connections=POSTGRES_CONNECTIONS)
                )
            except Unavailable as exc:
                print(f"PostgreSQL: skipped ({exc})")
                runnable = [s for s in runnable if s.backend != "postgresql"]
        sqlite = str(workdir / "fleet.db") if any(s.backend == "sqlite" for s in runnable) else None
        postgres = cluster.create_database("fleet") if cluster else None
        say(f"registering {args.nodes} computers through MasterStore's transitions")
        for backend, rate in prepare(args, sqlite, postgres).items():
            say(
                f"  {backend}: {rate:.0f} registrations/s ({REGISTERED_TOGETHER} per "
                "transaction; both back-ends at once)"
            )
        for setup in runnable:
            database = sqlite
            if setup.backend == "postgresql":
                assert cluster is not None
                name = f"fleet_{setup.workers}"
                cluster.psql(f'CREATE DATABASE "{name}" TEMPLATE "fleet"')
                database = cluster.url(name)
            assert database is not None
            account = cluster.account.pw_name if cluster and setup.backend != "sqlite" else None
            try:
                results[setup.name] = measure(setup, database, workdir, args, account, workers_flag)
            except (RuntimeError, OSError) as exc:  # the other set-ups still run
                say(f"{setup.name}: FAILED: {exc}")
                failed.append(setup.name)
    measured = not args.smoke and args.reference_nodes > 0
    venv = find_reference_venv(args.reference_venv) if measured else None
    reference: tuple[float, Figures] | None = None
    if venv is not None:
        reference = measure_reference(venv, args)
        results[f"reference ({args.reference_nodes})"] = reference[1]
    elif measured:
        print("reference venv not found (create .venv-ref: see tests/interop/conftest.py)")

    print()
    report(results)
    print("targets")
    for name, figures in results.items():
        if not name.startswith("reference"):
            print(verdicts(name, figures))
    if reference is not None:
        rate, figures = reference
        print(
            f"reference slapos proxy: {rate:.1f} registrations/s over HTTP; fetch load of "
            f"{args.reference_nodes} nodes only (no change feed)"
        )
        theirs = percentile(figures.fetches, 99)
        for name, ours in results.items():
            if not name.startswith("reference"):
                ratio = percentile(ours.fetches, 99) / max(theirs, 1e-9)
                print(
                    f"  fetch p99 of {name} ({args.nodes} nodes, with the feed and the users) "
                    f"/ reference's: x{ratio:.2f}"
                )
    errors = sum(sum(f.errors.values()) for n, f in results.items() if not n.startswith("ref"))
    return 1 if failed or (args.smoke and errors) else 0


if __name__ == "__main__":
    sys.exit(main())
