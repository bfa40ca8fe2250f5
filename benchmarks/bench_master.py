"""Benchmark: our embedded master against the reference `slapos proxy`, same run, same load.

Two scenarios, each run against both masters (one at a time, each in its own process):

1. *throughput*: `--concurrency` keep-alive clients fetch getFullComputerInformation of one
   computer with `--partitions` busy partitions back to back for `--duration` seconds.
2. *nodes*: `--nodes` simulated nodes, each with its own small computer, poll their
   getFullComputerInformation every `--interval` seconds for `--node-duration` seconds
   (ours is also measured with `If-None-Match`, which our agent sends).

Our master serves HTTPS, as it does by default: every client verifies it against its CA
and presents the certificate of the computer it reads (a user's to supply and request),
issued by that CA. The reference proxy only speaks plain HTTP. With `--plain` (the default
of full runs, not of `--smoke`) ours is measured a second time over plain HTTP
(`--insecure`): what TLS costs.

Prints requests/s, p50/p99 latencies and the ratios. Targets: ≥ 10x the reference's
throughput, p99 < 50 ms. Run: `.venv/bin/python benchmarks/bench_master.py [--smoke]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import ssl
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from slapgrid.master.pki.authority import Authority, cert_pem
from slapgrid.master.pki.identity import Identity
from slapgrid.slap import marshal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from slap_load import (
    SOFTWARE,
    Connection,
    computer_definition,
    find_reference_venv,
    percentile,
    request_form,
)

import reference_env
from support.addresses import free_port

BIG_COMPUTER = "COMP-BENCH"
TLS, PLAIN = "slapgrid (HTTPS)", "slapgrid (HTTP)"


# --- masters -------------------------------------------------------------------------------


class Callers:
    """The TLS contexts of a master's callers: each verifies the master against `ca_file` and
    presents a certificate of `authority` (one per computer, one user); none on plain HTTP."""

    def __init__(self, authority: Authority | None, directory: Path) -> None:
        self.authority, self.directory = authority, directory
        self._contexts: dict[Identity, ssl.SSLContext] = {}

    def context(self, identity: Identity) -> ssl.SSLContext | None:
        if self.authority is None:
            return None
        if identity not in self._contexts:
            key, certificate = self.authority.issue_key_pair(identity)
            name = identity.computer or f"user-{identity.user}"
            key_file, cert_file = self.directory / f"{name}.key", self.directory / f"{name}.pem"
            key_file.write_bytes(key)
            cert_file.write_bytes(cert_pem(certificate))
            context = ssl.create_default_context(cafile=str(self.authority.ca_file))
            context.load_cert_chain(cert_file, key_file)
            self._contexts[identity] = context
        return self._contexts[identity]

    def computer(self, computer: str) -> ssl.SSLContext | None:
        return self.context(Identity.for_computer(computer))

    def user(self) -> ssl.SSLContext | None:
        return self.context(Identity.for_user("bench"))


@contextlib.contextmanager
def ours(workdir: Path, port: int, *, tls: bool) -> Iterator[tuple[str, Callers]]:
    """Our master in its own process (`serve`, as `slapgrid master start`): HTTPS with its CA
    in `workdir/pki`, made here first so the callers' certificates can be, or `--insecure`."""
    name = "ours-tls" if tls else "ours-plain"
    authority = Authority.open(workdir / "pki") if tls else None
    callers = Callers(authority, workdir)
    code = (
        "import logging, sys; logging.basicConfig(level=logging.WARNING);"
        "from slapgrid.master.server import serve;"
        "serve('127.0.0.1', int(sys.argv[1]), sys.argv[2], 'COMP-0', log_level='warning',"
        " pki_dir=sys.argv[3], insecure=sys.argv[4] == 'plain')"
    )
    database, pki = workdir / f"{name}.db", workdir / "pki"
    command = [sys.executable, "-c", code, str(port), str(database), str(pki)]
    command.append("tls" if tls else "plain")
    scheme = "https" if tls else "http"
    verify = callers.user() or True
    url = f"{scheme}://127.0.0.1:{port}/"
    with reference_env.serving(command, url, workdir / f"{name}.log", "getHateoasUrl", verify):
        yield url, callers


@contextlib.contextmanager
def reference(venv: Path, workdir: Path, port: int) -> Iterator[tuple[str, Callers]]:
    config = workdir / "proxy.cfg"
    config.write_text(
        f"[slapos]\ncomputer_id = COMP-0\n[slapproxy]\nhost = 127.0.0.1\nport = {port}\n"
        f"database_uri = {workdir / 'proxy.db'}\n"
    )
    command = [str(venv / "bin" / "slapos"), "proxy", "start", "--cfg", str(config)]
    url = f"http://127.0.0.1:{port}/"
    with reference_env.serving(command, url, workdir / "proxy.log", "getHateoasUrl"):
        yield url, Callers(None, workdir)


# --- workload ------------------------------------------------------------------------------


def populate(
    url: str, callers: Callers, computer: str, partitions: int, busy: int, prefix: str
) -> None:
    """Format a computer (as it), supply the software and request `busy` instances with
    parameters (as a user), publish their connection parameters (as the computer)."""
    node_tls, user_tls = callers.computer(computer), callers.user()
    with (
        httpx.Client(base_url=url, timeout=60, verify=node_tls or True) as node,
        httpx.Client(base_url=url, timeout=60, verify=user_tls or True) as user,
    ):

        def post(client: httpx.Client, endpoint: str, data: dict[str, str]) -> None:
            response = client.post(endpoint, data=data)
            response.raise_for_status()

        definition = computer_definition(computer, partitions)
        xml = marshal.dumps(definition).decode()
        post(node, "loadComputerConfigurationFromXML", {"xml": xml})
        supplied = {"url": SOFTWARE, "computer_id": computer, "state": "available"}
        post(user, "supplySupply", supplied)
        for i in range(busy):
            parameters = {f"key-{k}": f"value {k} of instance {i}" for k in range(8)}
            form = request_form(f"{prefix}instance-{i}", parameters, computer)
            post(user, "requestComputerPartition", form)
            connection = {"url": f"https://[fd00::{i + 1:x}]:8443/", "password": "secret"}
            post(
                node,
                "setComputerPartitionConnectionXml",
                {
                    "computer_id": computer,
                    "computer_partition_id": f"slappart{i}",
                    "connection_xml": marshal.dumps(connection).decode(),
                },
            )


# --- load generator (raw HTTP/1.1 keep-alive over asyncio streams: cheap per request) ----------


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    not_modified: int = 0
    elapsed: float = 0.0
    # the nodes' latencies apart: requests that opened their connection (TCP, and the TLS
    # handshake) and those on a connection kept alive
    opening: list[float] = field(default_factory=list)
    kept: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: int, of: list[float] | None = None) -> float:
        return percentile(self.latencies if of is None else of, q)


async def hammer(
    url: str, callers: Callers, computer: str, concurrency: int, duration: float
) -> Stats:
    """Back-to-back requests from `concurrency` connections, each with the computer's
    certificate (on HTTPS: the handshake is made once per connection, as a node does)."""
    stats = Stats()
    tls = callers.computer(computer)
    path = f"/getFullComputerInformation?computer_id={computer}"
    stop = time.perf_counter() + duration

    async def worker() -> None:
        connection = Connection(url, tls)
        while time.perf_counter() < stop:
            start = time.perf_counter()
            try:
                status, _ = await connection.get(path)
            except (OSError, asyncio.IncompleteReadError):
                stats.errors += 1
                connection = Connection(url, tls)
                continue
            if status == 200:
                stats.latencies.append(time.perf_counter() - start)
            else:
                stats.errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    stats.elapsed = time.perf_counter() - began
    return stats


async def nodes(
    url: str, callers: Callers, count: int, duration: float, interval: float, etag: bool
) -> Stats:
    """`count` nodes, each polling its own computer every `interval` s (jittered start),
    each with its computer's certificate."""
    stats = Stats()
    stop = time.perf_counter() + duration

    async def node(index: int) -> None:
        tls = callers.computer(f"COMP-{index}")
        connection = Connection(url, tls)
        path = f"/getFullComputerInformation?computer_id=COMP-{index}"
        known: str | None = None
        await asyncio.sleep(random.uniform(0, interval))
        while time.perf_counter() < stop:
            start = time.perf_counter()
            opens = connection.writer is None
            try:
                status, tag = await connection.get(path, known if etag else None)
            except (OSError, asyncio.IncompleteReadError):
                stats.errors += 1
                connection = Connection(url, tls)
                await asyncio.sleep(interval)
                continue
            if status in (200, 304):
                stats.latencies.append(time.perf_counter() - start)
                (stats.opening if opens else stats.kept).append(stats.latencies[-1])
                stats.not_modified += status == 304
                known = tag or known
            else:
                stats.errors += 1
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - start)))

    began = time.perf_counter()
    await asyncio.gather(*(node(i) for i in range(count)))
    stats.elapsed = time.perf_counter() - began
    return stats


# --- the run -------------------------------------------------------------------------------


def measure(
    url: str, callers: Callers, args: argparse.Namespace, with_etag: bool
) -> dict[str, Stats]:
    print(f"  populating {BIG_COMPUTER} ({args.partitions} busy partitions)", flush=True)
    populate(url, callers, BIG_COMPUTER, args.partitions, args.partitions, "big-")
    print(f"  populating {args.nodes} node computers", flush=True)
    for index in range(args.nodes):
        populate(url, callers, f"COMP-{index}", 4, 2, f"n{index}-")
    results = {}
    warm_up = min(1.0, args.duration)
    asyncio.run(hammer(url, callers, BIG_COMPUTER, args.concurrency, warm_up))
    results["throughput"] = asyncio.run(
        hammer(url, callers, BIG_COMPUTER, args.concurrency, args.duration)
    )
    results["nodes"] = asyncio.run(
        nodes(url, callers, args.nodes, args.node_duration, args.interval, etag=False)
    )
    if with_etag:
        results["nodes+etag"] = asyncio.run(
            nodes(url, callers, args.nodes, args.node_duration, args.interval, etag=True)
        )
    return results


def line(name: str, stats: Stats) -> str:
    text = (
        f"  {name:<22} {stats.rate:9.1f} req/s   p50 {stats.percentile(50):8.2f} ms"
        f"   p99 {stats.percentile(99):8.2f} ms   n={len(stats.latencies)}"
        f"   errors={stats.errors}" + (f"   304={stats.not_modified}" if stats.not_modified else "")
    )
    if not stats.opening:
        return text
    # the nodes: each one's first request apart (it opens the connection), then the others
    for what, values in (("opening", stats.opening), ("kept-alive", stats.kept)):
        text += (
            f"\n    {what:<20} {'':>15}   p50 {stats.percentile(50, values):8.2f} ms"
            f"   p99 {stats.percentile(99, values):8.2f} ms   n={len(values)}"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--node-duration", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--reference-venv", help="venv with slapos.core (default: .venv-ref)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds per scenario")
    parser.add_argument(
        "--plain",
        action=argparse.BooleanOptionalAction,
        help="also measure ours over plain HTTP (--insecure) [yes, not with --smoke]",
    )
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.node_duration, args.nodes = 2.0, 3.0, 20
    if args.plain is None:
        args.plain = not args.smoke

    venv = find_reference_venv(args.reference_venv)
    results: dict[str, dict[str, Stats]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-master-") as tmp:
        workdir = Path(tmp)
        if venv is None:
            print("reference venv not found (create .venv-ref: see tests/interop/conftest.py)")
        else:
            print(f"reference slapos proxy, plain HTTP ({venv})", flush=True)
            with reference(venv, workdir, free_port()) as (url, callers):
                results["reference"] = measure(url, callers, args, with_etag=False)
        print("slapgrid master, HTTPS with client certificates", flush=True)
        with ours(workdir, free_port(), tls=True) as (url, callers):
            results[TLS] = measure(url, callers, args, with_etag=True)
        if args.plain:
            print("slapgrid master, plain HTTP (--insecure)", flush=True)
            with ours(workdir, free_port(), tls=False) as (url, callers):
                results[PLAIN] = measure(url, callers, args, with_etag=True)

    print(
        f"\ngetFullComputerInformation, {args.partitions} busy partitions, "
        f"{args.concurrency} connections, {args.duration:g} s; "
        f"{args.nodes} nodes every {args.interval:g} s for {args.node_duration:g} s "
        f"(cores: {os.cpu_count()})"
    )
    for master, scenarios in results.items():
        print(master)
        for name, stats in scenarios.items():
            print(line(name, stats))
    our = results[TLS]
    if "reference" in results:
        ref = results["reference"]
        throughput = our["throughput"].rate / max(ref["throughput"].rate, 1e-9)
        p99 = our["nodes"].percentile(99)
        print("ratios (slapgrid over HTTPS / reference over HTTP)")
        print(
            f"  throughput            x{throughput:.1f}   (target >= 10: "
            f"{'met' if throughput >= 10 else 'NOT met'})"
        )
        for name in ("throughput", "nodes"):
            ratio = ref[name].percentile(99) / max(our[name].percentile(99), 1e-9)
            print(f"  p99 latency {name:<10} x{ratio:.1f} lower")
        print(
            f"  nodes p99             {p99:.2f} ms (target < 50 ms: "
            f"{'met' if p99 < 50 else 'NOT met'})"
        )
    if PLAIN in results:
        plain = results[PLAIN]
        print("what TLS costs (slapgrid over HTTPS / over plain HTTP)")
        for name in our:
            rate = our[name].rate / max(plain[name].rate, 1e-9)
            p99_ratio = our[name].percentile(99) / max(plain[name].percentile(99), 1e-9)
            print(f"  {name:<20} throughput x{rate:.2f}   p99 x{p99_ratio:.2f}")


if __name__ == "__main__":
    main()
