"""Benchmark: how soon every service answers again after a reboot.

One node, our master in this process, examples/hello built once, `--partitions` partitions
requested `started` and deployed (each an HTTP service on its own 127.x address). Then,
`--rounds` times for each command: a power cut (supervisord and every service killed with
SIGKILL, the files left as they were), the command started, and the time measured from its
start until every service answers HTTP again:

* `slapgrid node`: the agent's first pass, at its start;
* `slapgrid instance`: one run (its own wall time and exit code are shown too).

Nothing is redeployed: the partitions are up to date, their services merely down, which
the planner starts (`services-down`). The reference has no such pass: after a reboot its
services stay down until `slapos node boot` deleted every `.timestamp` and the next
`slapos node instance` redeployed every partition, so it is not measured here.
Target: <= 10 s for 50 partitions. Run: `.venv/bin/python benchmarks/bench_reboot.py
[--smoke]`.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import reference_env  # noqa: E402
from slapgrid.master.server import MasterServer  # noqa: E402
from slapgrid.master.storage import MasterStore  # noqa: E402
from slapgrid.node.format.run import run_format  # noqa: E402
from slapgrid.node.supervisor.control import Supervisor  # noqa: E402
from slapgrid.slap.client import SlapClient  # noqa: E402
from support.reboot import power_cut  # noqa: E402

HELLO = str(ROOT / "examples" / "hello" / "software.cfg")
COMPUTER = "COMP-REBOOT"
TARGET = 10.0


def answering(urls: list[str]) -> list[str]:
    """The URLs that do not answer yet (a short timeout: a down service refuses at once)."""
    silent = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                answer.read()
        except OSError:
            silent.append(url)
    return silent


def until_all_answer(urls: list[str], started: float, timeout: float = 300) -> float:
    """Seconds from `started` until every URL answered once (each is polled until it does)."""
    left = list(urls)
    while left:
        if time.monotonic() - started > timeout:
            raise SystemExit(f"{len(left)} service(s) still silent after {timeout:g} s")
        left = answering(left)
        if left:
            time.sleep(0.02)
    return time.monotonic() - started


def deploy(workdir: Path, master_url: str, partitions: int) -> tuple[Path, list[str]]:
    """A formatted node with `partitions` hello instances deployed; its config and URLs."""
    instance_root, software_root = workdir / "instance", workdir / "software"
    instance_root.mkdir()
    software_root.mkdir()
    network = f"127.{random.randrange(2, 255)}.{random.randrange(256)}.0/24"
    run_format(
        None,
        {
            "master_url": master_url,
            "computer_id": COMPUTER,
            "instance_root": str(instance_root),
            "software_root": str(software_root),
            "partition_amount": partitions,
            "alter_user": False,
            "ipv4_local_network": network,
        },
    )
    config = reference_env.write_node_config(
        workdir / "slapos.cfg",
        master_url=master_url,
        computer_id=COMPUTER,
        software_root=software_root,
        instance_root=instance_root,
    )
    with SlapClient(master_url, COMPUTER) as client:
        client.supply(HELLO)
        print("building examples/hello", flush=True)
        build = reference_env.run_node(reference_env.ours("software", config))
        if build.returncode != 0:
            raise SystemExit(f"the build failed:\n{build.output[-3000:]}")
        for index in range(partitions):
            client.request(HELLO, f"reboot-{index}")  # each on port 8080 of its own IPv4
        print(f"deploying {partitions} partitions", flush=True)
        run = reference_env.run_node(reference_env.ours("instance", config), timeout=3600)
        if run.returncode != 0:
            raise SystemExit(f"the deployment failed:\n{run.output[-3000:]}")
        print(f"  deployed in {run.wall:.1f} s", flush=True)
        titles = [f"reboot-{index}" for index in range(partitions)]
        urls = [client.request(HELLO, title).connection["url"] for title in titles]
    if answering(urls):
        raise SystemExit("some services do not answer after the deployment")
    return config, urls


def after_agent_start(config: Path, urls: list[str], log: Path) -> float:
    """Power cut, then `slapgrid node`: seconds until every service answers."""
    command = reference_env.ours("node", config, "--now", "--no-progress")
    command[3:3] = ["--log-file", str(log)]  # a global option, before the command
    started = time.monotonic()
    agent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return until_all_answer(urls, started)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(120)


def after_one_run(config: Path, urls: list[str]) -> tuple[float, reference_env.NodeRun]:
    """Power cut, then one `slapgrid instance`: seconds until every service answers."""
    started = time.monotonic()
    run = reference_env.run_node(reference_env.ours("instance", config))
    return until_all_answer(urls, started), run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=50, help="started partitions")
    parser.add_argument("--rounds", type=int, default=3, help="power cuts per command")
    parser.add_argument("--smoke", action="store_true", help="3 partitions, 1 round")
    args = parser.parse_args()
    if args.smoke:
        args.partitions, args.rounds = 3, 1
    logging.getLogger("slapgrid").setLevel(logging.ERROR)  # format's and the master's chatter
    # the stopped agent's long poll, still waiting in the master when it shuts down
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)

    workdir = reference_env.public_tempdir("bench-reboot-")
    store = MasterStore(workdir / "master.db", default_computer=COMPUTER)
    supervisor = Supervisor(workdir / "instance")
    try:
        with MasterServer(store, insecure=True) as server:
            config, urls = deploy(workdir, server.url, args.partitions)
            agent, one_run, walls = [], [], []
            for index in range(args.rounds):
                killed = power_cut(supervisor)
                agent.append(after_agent_start(config, urls, workdir / f"agent-{index}.log"))
                power_cut(supervisor)
                seconds, run = after_one_run(config, urls)
                if run.returncode != 0:
                    raise SystemExit(f"slapgrid instance exited {run.returncode}:\n{run.output}")
                one_run.append(seconds)
                walls.append(run.wall)
                print(
                    f"  round {index + 1}: {killed} processes killed; every service answers "
                    f"{agent[-1]:.2f} s after `slapgrid node` starts, {seconds:.2f} s after "
                    f"`slapgrid instance` starts (run: {run.wall:.2f} s, exit 0)",
                    flush=True,
                )
    finally:
        supervisor.shutdown()
        store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{args.partitions} started partitions, supervisord and every service killed:")
    for name, values in (("slapgrid node", agent), ("slapgrid instance", one_run)):
        worst = max(values)
        verdict = "met" if worst <= TARGET else "MISSED"
        print(
            f"  {name:<18} every service answers after median {statistics.median(values):.2f} s,"
            f" worst {worst:.2f} s (target <= {TARGET:g} s: {verdict})"
        )
    print(f"  slapgrid instance run wall time: median {statistics.median(walls):.2f} s")


if __name__ == "__main__":
    main()
