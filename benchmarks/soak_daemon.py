"""Soak: `slapgrid node` under steady change for a long time; does it stay flat?

`--partitions` instances of examples/hello are deployed, then one partition's parameters
change every `--change-every` seconds (round robin) for `--duration` seconds (30 minutes
by default). Every `--sample-every` seconds the agent process's resident memory, open file
descriptors and threads are sampled. At the end: the first and last samples, the maximum,
the least-squares slope, how many changes became deployments and how fast (request →
"deploying" in the agent's log), and the agent's own counters. Not part of CI.
Run: `.venv/bin/python benchmarks/soak_daemon.py [--duration 1800]`.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_daemon_latency import line  # noqa: E402

from daemon_site import SOFTWARE, Agent, Site, is_deployed, log_time  # noqa: E402
from support.addresses import free_port  # noqa: E402

MIB = 1 << 20


@dataclass(frozen=True)
class Sample:
    at: float
    rss: int
    fds: int
    threads: int


def sample(process: psutil.Process) -> Sample:
    with process.oneshot():
        return Sample(
            time.time(), process.memory_info().rss, process.num_fds(), process.num_threads()
        )


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    return statistics.linear_regression([t for t, _ in points], [v for _, v in points]).slope * 3600


def deploy(site: Site, count: int) -> tuple[Agent, dict[str, tuple[str, str]]]:
    """Request every instance, start the agent, wait until all are deployed.

    Returns the agent and, for each partition, its instance's title and port.
    """
    instances = {}
    for index in range(count):
        title, port = f"soak-{index}", str(free_port())
        instances[site.request(title, port=port)] = (title, port)
    agent = site.start_agent()
    started = time.monotonic()
    for pid in instances:
        agent.event(is_deployed(pid), timeout=600)
    print(f"{count} partitions deployed in {time.monotonic() - started:.0f} s", flush=True)
    return agent, instances


def reactions(agent: Agent, changes: list[tuple[str, float]]) -> tuple[list[float], int]:
    """Request → first "deploying" of that partition after it; and how many never came."""
    deploys: dict[str, list[float]] = {}
    for event in agent.events():
        if event.get("action") == "deploy" and event.get("partition"):
            deploys.setdefault(event["partition"], []).append(log_time(event))
    found, missing = [], 0
    for pid, requested in changes:
        later = [at for at in deploys.get(pid, []) if at >= requested]
        if later:
            found.append(later[0] - requested)
        else:
            missing += 1
    return found, missing


def report(
    samples: list[Sample], agent: Agent, changes: list[tuple[str, float]], port: int
) -> None:
    warm, last = samples[0], samples[-1]
    hours = (last.at - warm.at) / 3600
    print(
        f"\nsoak: {len(changes)} parameter changes over {hours * 60:.1f} min, "
        f"{len(samples)} samples"
    )
    for name, unit, values in (
        ("RSS", "MiB", [s.rss / MIB for s in samples]),
        ("open fds", "", [float(s.fds) for s in samples]),
        ("threads", "", [float(s.threads) for s in samples]),
    ):
        points = [(s.at, v) for s, v in zip(samples, values, strict=True)]
        whole, late = slope_per_hour(points), slope_per_hour(points[len(points) // 2 :])
        print(
            f"  {name:<9} first {values[0]:7.1f}  last {values[-1]:7.1f}  max {max(values):7.1f}"
            f"  slope {whole:+7.2f}{unit and ' ' + unit}/h (second half {late:+7.2f})"
        )
    series = " ".join(f"{s.rss / MIB:.1f}" for s in samples)
    print(f"  RSS every sample (MiB): {series}")
    found, missing = reactions(agent, changes)
    if found:
        print("  " + line("reaction", found))
    print(f"  changes not deployed by the end: {missing}")
    errors = Counter(
        re.sub(r"slappart\d+|[\d.]+:\d+|\d+\.\d+ s", "…", event["message"])[:110]
        for event in agent.events()
        if event.get("level") == "error"
    )
    print(f"  error lines in the agent's log: {errors.total()}")
    for message, count in errors.most_common(5):
        print(f"    {count:4d} × {message}")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode().splitlines()
    for row in metrics:
        if row.startswith(("slapgrid_node_runs_total", "slapgrid_node_master_errors_total")):
            print(f"  {row}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800, help="seconds of changes")
    parser.add_argument("--partitions", type=int, default=50)
    parser.add_argument("--change-every", type=float, default=3.0, help="seconds")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-daemon-") as directory:
        site = Site(Path(directory), args.partitions)
        try:
            site.client.supply(SOFTWARE)
            print(f"building {SOFTWARE}, deploying {args.partitions} partitions", flush=True)
            agent, instances = deploy(site, args.partitions)
            process = psutil.Process(agent.process.pid)
            pids = sorted(instances)
            changes: list[tuple[str, float]] = []
            samples = [sample(process)]
            deadline = time.time() + args.duration
            next_sample = time.time() + args.sample_every
            while time.time() < deadline:
                pid = pids[len(changes) % len(pids)]
                title, port = instances[pid]
                changes.append((pid, time.time()))
                site.request(title, port=port, generation=str(len(changes)))
                if time.time() >= next_sample:
                    samples.append(sample(process))
                    next_sample += args.sample_every
                time.sleep(args.change_every)
            time.sleep(10)  # let the last changes land
            samples.append(sample(process))
            report(samples, agent, changes, site.metrics_port)
        finally:
            site.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
