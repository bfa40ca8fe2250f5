"""What one call costs the master on a fleet-sized database: CPU (ms) and wall time per call.

Fills a SQLite database with `--computers` computers of 10 partitions each (in bulk, half
of the partitions busy with a root instance, one shared instance and one supplied release
per computer), then measures, one call after the other:

* through the store (`MasterStore`, the transaction alone, no server): a request of a new
  instance, a re-request that changes nothing, a request with changed parameters, the
  registration of a new computer of 10 partitions (loadComputerConfigurationFromXML), and
  the render of one computer's document (what the document cache does after each change);
* over HTTP on 127.0.0.1 (`MasterServer(store, insecure=True)` in this process): the same
  requests and registration, getFullComputerInformation from the cache (200, and 304 with
  `If-None-Match`), the same after a change of its computer, and a change-feed long poll
  re-armed (a poll of the current generation with `timeout=0`). The master's CPU there is
  this process's CPU less the client thread's, counted until the re-renders the calls set
  off are done, so it includes them.

`--profile KIND` runs cProfile over the store calls of that kind and prints where they
spend. Run: `.venv/bin/python benchmarks/profile_master_calls.py --computers 10000`.
Not run by `python -m benchmarks` (no reference to compare with): on demand.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from slap_load import computer_definition
from sqlalchemy import create_engine, insert, text

from slapgrid.master.inputs import as_xml
from slapgrid.master.server import MasterServer
from slapgrid.master.storage import InstanceRequest, MasterStore
from slapgrid.master.tables import AddressRow, ComputerRow, PartitionRow, SharedRow, SoftwareRow
from slapgrid.slap import marshal

SOFTWARE = "https://lab.example.com/software/bench/software.cfg"
PARTITIONS, BUSY = 10, 5  # per computer; partitions BUSY… are free for new requests
KINDS = ("new", "unchanged", "changed", "register", "render")


def computer(number: int) -> str:
    return f"COMP-{number}"


def parameters(version: int) -> dict[str, str]:
    return {f"key-{k}": f"value {k} version {version}" for k in range(8)}


# --- filling ---------------------------------------------------------------------------------


def fill(url: str, computers: int) -> None:
    """`computers` formatted computers, half their partitions busy, in bulk (rows as the store
    writes them, so that re-requesting the same instance changes nothing)."""
    partition_id = 0
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("PRAGMA synchronous=OFF"))
        for first in range(0, computers, 1000):
            rows: dict[Any, list[dict[str, Any]]] = {
                table: [] for table in (ComputerRow, PartitionRow, AddressRow, SoftwareRow)
            }
            shared = []
            for c in range(first, min(first + 1000, computers)):
                name = computer(c)
                rows[ComputerRow].append({"reference": name, "generation": 1})
                rows[SoftwareRow].append({"computer": name, "url": SOFTWARE})
                for i in range(PARTITIONS):
                    partition_id += 1
                    row = {"id": partition_id, "computer": name, "reference": f"slappart{i}"}
                    rows[PartitionRow].append(row | instance_columns(c, i))
                    for address in (f"10.1.0.{i + 1}", f"fd00::{i + 1:x}"):
                        rows[AddressRow].append(
                            {"partition_id": partition_id, "interface": f"slaptap{i}"}
                            | {"address": address, "netmask": "", "gateway": "", "network": ""}
                        )
                shared.append(
                    {
                        "guid": f"SHARED-{c}",
                        "title": f"front-{c}",
                        "software_release": SOFTWARE,
                        "software_type": "default",
                        "parameters": as_xml({"url": f"https://{c}.example.com"}, "p"),
                        "filter": as_xml({}, "filter"),
                        "host_id": partition_id - PARTITIONS + 1,
                        "timestamp": 1,
                    }
                )
            for table, values in rows.items():
                connection.execute(insert(table), values)
            connection.execute(insert(SharedRow), shared)
    engine.dispose()


def instance_columns(c: int, i: int) -> dict[str, Any]:
    """Partition `i` of computer `c`: busy with a root instance, or free."""
    if i >= BUSY:
        free = ("guid", "title", "software_release", "software_type", "parameters", "filter")
        return dict.fromkeys(free) | {
            "slap_state": "free",
            "requested_by": "",
            "requested_state": "destroyed",
            "timestamp": 0,
        }
    return {
        "slap_state": "busy",
        "guid": f"SOFTINST-{c}-{i}",
        "title": f"instance-{c}-{i}",
        "requested_by": "",
        "software_release": SOFTWARE,
        "software_type": "default",
        "parameters": as_xml(parameters(0), "parameters"),
        "filter": as_xml({"computer_guid": computer(c)}, "filter"),
        "requested_state": "started",
        "timestamp": 1,
    }


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Figures:
    cpu_ms: list[float]
    wall_ms: list[float]

    def line(self, name: str) -> str:
        p99 = statistics.quantiles(self.wall_ms, n=100)[98] if len(self.wall_ms) > 1 else 0.0
        return (
            f"{name:<44} CPU {statistics.mean(self.cpu_ms):7.2f} ms   "
            f"wall p50 {statistics.median(self.wall_ms):7.2f} ms  p99 {p99:7.2f} ms"
        )


def timed(calls: list[Callable[[], Any]]) -> Figures:
    cpu, wall = [], []
    for call in calls:
        c0, w0 = time.process_time(), time.perf_counter()
        call()
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    return Figures(cpu, wall)


class Samples:
    """Fresh arguments for each kind of call: no two calls repeat a title or computer."""

    def __init__(self, computers: int, count: int) -> None:
        self.computers, self.count = computers, count
        self.used = 0

    def computers_for(self) -> list[int]:
        """`count` computers spread over the fleet, none used by an earlier batch."""
        step = max(1, self.computers // (self.count * 8))
        first, self.used = self.used, self.used + self.count
        return [(first + n * 8) * step % self.computers for n in range(self.count)]


def store_calls(store: MasterStore, samples: Samples, kind: str) -> list[Callable[[], Any]]:
    """The calls of one kind on the store, each on its own computer."""
    calls: list[Callable[[], Any]] = []
    for n, c in enumerate(samples.computers_for()):
        if kind == "register":
            calls.append(
                lambda n=n: store.load_computer_configuration(
                    computer_definition(f"NEW-{n}", PARTITIONS)
                )
            )
        elif kind == "render":
            calls.append(lambda c=c: render(store, computer(c)))
        else:
            calls.append(lambda c=c: store.request(instance_request(c, kind)))
    return calls


def render(store: MasterStore, reference: str) -> bytes:
    """What the document cache does for a computer whose generation moved."""
    return marshal.dumps(store.computer_document(reference)[1].to_wire())


def instance_request(c: int, kind: str) -> InstanceRequest:
    """new: on a free partition of computer `c`; unchanged / changed: its instance 0 / 1."""
    title = {"new": f"new-{c}", "unchanged": f"instance-{c}-0", "changed": f"instance-{c}-1"}
    return InstanceRequest(
        SOFTWARE,
        title[kind],
        parameters=parameters(1 if kind == "changed" else 0),
        filter={"computer_guid": computer(c)},
        state="started",
    )


def request_form(c: int, kind: str) -> dict[str, str]:
    wanted = instance_request(c, kind)
    return {
        "software_release": wanted.software_release,
        "software_type": wanted.software_type,
        "partition_reference": wanted.title,
        "partition_parameter_xml": marshal.dumps(dict(wanted.parameters)).decode(),
        "filter_xml": marshal.dumps(dict(wanted.filter)).decode(),
        "state": marshal.dumps(wanted.state).decode(),
        "shared_xml": marshal.dumps(False).decode(),
    }


@contextmanager
def quiet_master(server: MasterServer) -> Iterator[None]:
    """Until the document cache has re-rendered every document the calls changed."""
    yield
    documents = server.state.documents
    while documents._pending or documents._tasks:  # what it has still to render
        time.sleep(0.005)


def http_batch(server: MasterServer, calls: list[Callable[[], Any]]) -> Figures:
    """Wall time per call as the client sees it; the master's CPU per call: this process's
    less this (client) thread's, until the re-renders the calls set off are done."""
    c0, t0 = time.process_time(), time.thread_time()
    with quiet_master(server):
        figures = timed(calls)
    master_cpu = (time.process_time() - c0) - (time.thread_time() - t0)
    return Figures([master_cpu * 1000 / len(calls)], figures.wall_ms)


def measure_http(server: MasterServer, samples: Samples) -> None:
    store = server.store
    with httpx.Client(base_url=server.url, timeout=60) as client:

        def post(endpoint: str, data: dict[str, str]) -> None:
            client.post(endpoint, data=data).raise_for_status()

        def get(endpoint: str, **params: Any) -> httpx.Response:
            response = client.get(endpoint, params=params, headers=params.pop("headers", {}))
            if response.status_code not in (200, 304):
                response.raise_for_status()
            return response

        for kind in ("new", "unchanged", "changed"):
            calls = [
                lambda c=c, k=kind: post("requestComputerPartition", request_form(c, k))
                for c in samples.computers_for()
            ]
            print(http_batch(server, calls).line(f"HTTP request ({kind}) + re-render"))
        calls = [
            lambda n=n: post(
                "loadComputerConfigurationFromXML",
                {"xml": marshal.dumps(computer_definition(f"HTTP-{n}", PARTITIONS)).decode()},
            )
            for n in range(samples.count)
        ]
        print(http_batch(server, calls).line("HTTP registration (10 partitions) + render"))
        chosen = samples.computers_for()
        for c in chosen:  # the documents are cached and their generations known
            get("getFullComputerInformation", computer_id=computer(c))
        calls = [
            lambda c=c: get("getFullComputerInformation", computer_id=computer(c)) for c in chosen
        ]
        print(http_batch(server, calls).line("HTTP getFullComputerInformation, cached"))
        etags = {c: f'"{store.generation(computer(c))}"' for c in chosen}
        calls = [
            lambda c=c: get(
                "getFullComputerInformation",
                computer_id=computer(c),
                headers={"If-None-Match": etags[c]},
            )
            for c in chosen
        ]
        print(http_batch(server, calls).line("HTTP getFullComputerInformation, 304"))
        wall = []  # of the fetch; the master's CPU: the change's re-render and the fetch
        c0, t0 = time.process_time(), time.thread_time()
        with quiet_master(server):
            for c in samples.computers_for():
                store.request(instance_request(c, "changed"))  # this thread: not counted
                fetch = timed(
                    [lambda c=c: get("getFullComputerInformation", computer_id=computer(c))]
                )
                wall.append(fetch.wall_ms[0])
        master_cpu = (time.process_time() - c0) - (time.thread_time() - t0)
        figures = Figures([master_cpu * 1000 / len(wall)], wall)
        print(figures.line("HTTP getFullComputerInformation, changed"))
        calls = [
            lambda c=c: get(
                "slapgrid/changes",
                computer_id=computer(c),
                since=str(store.generation(computer(c))),
                timeout="0",
            )
            for c in chosen
        ]
        print(http_batch(server, calls).line("HTTP change feed poll re-armed (timeout 0)"))


def profile(store: MasterStore, samples: Samples, kind: str) -> None:
    calls = store_calls(store, samples, kind)
    profiler = cProfile.Profile(time.process_time)  # CPU, not waits (fsync)
    profiler.enable()
    for call in calls:
        call()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--computers", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=50, help="calls measured of each kind")
    parser.add_argument("--profile", choices=KINDS, help="cProfile the store calls of a kind")
    parser.add_argument("--smoke", action="store_true", help="100 computers, 10 calls")
    parser.add_argument("--no-http", action="store_true", help="the store calls only")
    parser.add_argument("--database", help="keep the database here (default: a temporary one)")
    args = parser.parse_args()
    if args.smoke:
        args.computers, args.calls = 100, 10
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(args.database or Path(scratch) / "master.db")
        MasterStore(path).close()  # the schema
        started = time.perf_counter()
        fill(f"sqlite:///{path}", args.computers)
        print(
            f"{args.computers} computers × {PARTITIONS} partitions ({BUSY} busy) filled in "
            f"{time.perf_counter() - started:.1f} s; {args.calls} calls of each kind"
        )
        store = MasterStore(path)
        samples = Samples(args.computers, args.calls)
        if args.profile:
            profile(store, samples, args.profile)
            store.close()
            return 0
        for kind in KINDS:
            label = {"register": "registration (10 partitions)", "render": "document render"}
            figures = timed(store_calls(store, samples, kind))
            print(figures.line(f"store {label.get(kind, f'request ({kind})')}"))
        if args.no_http:
            store.close()
            return 0
        started = time.perf_counter()
        with MasterServer(store, insecure=True) as server:
            with quiet_master(server):
                pass
            print(f"master started, every document rendered: {time.perf_counter() - started:.1f} s")
            measure_http(server, samples)
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
