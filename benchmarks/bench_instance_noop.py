"""Benchmark: `slapgrid instance` against `slapos node instance` (1.26.1) on deployed nodes.

One master (ours, in this process) and one computer per agent, `--partitions` partitions
each, every partition requested `started` with a light profile (light-instance.cfg.in: a
sleeping service and a passing promise; the Software Release is examples/hello with that
profile, built once by slapgrid into a software root both nodes share). Each agent deploys
its own computer; then its no-op runs (nothing changed at the master) are timed, the two
agents alternating, each run a fresh process: wall time, interpreter start included, and
peak RSS. Last, the first instantiation of one partition of examples/hello (`--smoke`: of
the light profile) on a fresh single-partition computer, `--first` times per agent.
Targets: no-op <= 1/10 of the reference and < 0.5 s; first instantiation <= 1/2.

Run as root, the reference refuses root-owned partitions: both nodes then belong to the
account `reference_env.node_user()` provides (tests/reference_env.py says what it needs);
without it only slapgrid is measured.

Run: `.venv/bin/python benchmarks/bench_instance_noop.py [--smoke]`.
"""

from __future__ import annotations

import argparse
import logging
import pwd
import random
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import reference_env  # noqa: E402
from slapgrid.master.server import MasterServer  # noqa: E402
from slapgrid.master.storage import MasterStore  # noqa: E402
from slapgrid.node.config import load_node_config  # noqa: E402
from slapgrid.node.format.run import run_format  # noqa: E402
from slapgrid.node.instance.run import run_instance  # noqa: E402
from slapgrid.slap.client import SlapClient  # noqa: E402

HELLO = ROOT / "examples" / "hello" / "software.cfg"
LIGHT_PROFILE = Path(__file__).with_name("light-instance.cfg.in")
NOOP_TARGET, NOOP_LIMIT, FIRST_TARGET = 0.1, 0.5, 0.5
WARM = "slapgrid node, warm"  # the same no-op pass in a running agent: no interpreter start

Command = Callable[..., list[str]]


@dataclass
class Node:
    agent: str
    computer: str
    root: Path
    config: Path
    command: Command

    def run(self, *flags: str, timeout: float = 3600) -> reference_env.NodeRun:
        command = self.command("instance", self.config, *flags)
        return reference_env.run_node(command, timeout=timeout)


def light_software(directory: Path) -> str:
    """examples/hello with the light instance profile."""
    profile = directory / "light.cfg"
    profile.write_text(
        f"[buildout]\nextends = {HELLO}\n\n[instance-profile]\ntemplate = {LIGHT_PROFILE}\n"
    )
    return str(profile)


class Bench:
    """The master, the shared software root and the nodes made on them."""

    def __init__(
        self, workdir: Path, master_url: str, user: pwd.struct_passwd | None, venv: Path | None
    ) -> None:
        self.workdir, self.master_url, self.user = workdir, master_url, user
        self.software_root = workdir / "software"
        self.software_root.mkdir()
        self.agents: dict[str, Command] = {"slapgrid": reference_env.ours}
        if venv is not None:
            self.agents["slapos node"] = lambda *args: reference_env.reference(venv, *args)
        self.networks = iter(range(2, 255))

    def node(self, agent: str, computer: str, partitions: int, software: list[str]) -> Node:
        """A formatted computer with `software` supplied, owned by the node user."""
        root = self.workdir / computer
        (root / "instance").mkdir(parents=True)
        options = {
            "master_url": self.master_url,
            "computer_id": computer,
            "instance_root": str(root / "instance"),
            "software_root": str(self.software_root),
            "partition_amount": partitions,
            "alter_user": False,
            "ipv4_local_network": f"127.{next(self.networks)}.{random.randrange(256)}.0/24",
        }
        run_format(None, options)
        if self.user is not None:
            reference_env.give_to(self.user, *(root / "instance").glob("slappart*"))
        config = reference_env.write_node_config(
            root / "slapos.cfg",
            master_url=self.master_url,
            computer_id=computer,
            software_root=self.software_root,
            instance_root=root / "instance",
        )
        with SlapClient(self.master_url, computer) as client:
            for url in software:
                client.supply(url)
        return Node(agent, computer, root, config, self.agents[agent])

    def request(self, node: Node, software: str, count: int, prefix: str) -> None:
        with SlapClient(self.master_url, node.computer) as client:
            for index in range(count):
                client.request(
                    software,
                    f"{prefix}-{index}",
                    state="started",
                    filter={"computer_guid": node.computer},
                )


def deploy(node: Node) -> reference_env.NodeRun:
    """Run the agent until every partition is deployed; the first run is the measure."""
    first = run = node.run()
    for _ in range(2):
        if run.returncode == 0:
            return first
        run = node.run()
    raise SystemExit(f"{node.agent} could not deploy {node.computer}:\n{run.output[-3000:]}")


def first_instantiation(
    bench: Bench, software: str, trials: int
) -> dict[str, list[reference_env.NodeRun]]:
    """Deploy one partition on a fresh computer per trial and agent; stop it afterwards."""
    runs: dict[str, list[reference_env.NodeRun]] = {agent: [] for agent in bench.agents}
    for trial in range(trials):
        for index, agent in enumerate(bench.agents):
            node = bench.node(agent, f"COMP-FIRST-{trial}-{index}", 1, [software])
            bench.request(node, software, 1, node.computer)
            try:
                run = node.run()
            finally:
                reference_env.stop_supervisord(node.root / "instance")
            # the reference may report hello's promise as failed when it runs before the
            # service listens (exit 2); the instantiation itself was done
            if run.returncode not in (0, 2) or (run.returncode == 2 and agent == "slapgrid"):
                raise SystemExit(f"{agent} failed a first instantiation:\n{run.output[-3000:]}")
            runs[agent].append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=100, help="deployed partitions")
    parser.add_argument("--runs", type=int, default=5, help="timed no-op runs per agent")
    parser.add_argument("--first", type=int, default=3, help="first instantiations per agent")
    parser.add_argument("--smoke", action="store_true", help="3 partitions, 3 runs, 1 first")
    args = parser.parse_args()
    if args.smoke:
        args.partitions, args.runs, args.first = 3, 3, 1
    logging.getLogger("slapgrid").setLevel(logging.ERROR)  # format's and the master's chatter

    venv: Path | None = None
    user: pwd.struct_passwd | None = None
    try:
        venv = reference_env.ensure_venv()
        user = reference_env.node_user(venv / "bin" / "python", sys.executable)
    except (reference_env.Unavailable, reference_env.InstallError) as exc:
        print(f"reference unavailable, measuring slapgrid only: {exc}")
        venv = None

    workdir = reference_env.public_tempdir("bench-instance-")
    store = MasterStore(workdir / "master.db")
    nodes: list[Node] = []
    try:
        with MasterServer(store, insecure=True) as server:
            bench = Bench(workdir, server.url, user, venv)
            light = light_software(workdir)
            first_software = light if args.smoke else str(HELLO)
            software = sorted({light, first_software})
            nodes = [
                bench.node(agent, f"COMP-{index}", args.partitions, software)
                for index, agent in enumerate(bench.agents)
            ]
            if user is not None:
                reference_env.give_to(user, bench.software_root)
            print(f"building {len(software)} Software Release(s) with slapgrid", flush=True)
            build = reference_env.run_node(reference_env.ours("software", nodes[0].config))
            if build.returncode != 0:
                raise SystemExit(f"the build failed:\n{build.output[-3000:]}")
            print(f"  built in {build.wall:.1f} s", flush=True)

            deployments = {}
            for node in nodes:
                bench.request(node, light, args.partitions, node.computer)
                print(f"{node.agent}: deploying {args.partitions} partitions", flush=True)
                deployments[node.agent] = deploy(node)
                print(f"  deployed in {deployments[node.agent].wall:.1f} s", flush=True)

            # each round runs both agents, and slapgrid's imports alone (nodes[0] is ours)
            ours, *others = ((n.agent, n.command("instance", n.config)) for n in nodes)
            imports = ("(its imports)", reference_env.ours_import("instance"))
            commands = dict([ours, imports, *others])
            noop: dict[str, list[reference_env.NodeRun]] = {name: [] for name in commands}
            for index in range(args.runs + 1):  # the first round warms caches up, untimed
                for name, command in commands.items():
                    run = reference_env.run_node(command)
                    if run.returncode != 0:
                        raise SystemExit(f"{name} no-op failed:\n{run.output[-3000:]}")
                    if index:
                        noop[name].append(run)
            ours_config = load_node_config(nodes[0].config)
            with SlapClient(server.url, nodes[0].computer) as client:
                noop[WARM] = reference_env.warm_passes(
                    lambda: run_instance(ours_config, client).status, args.runs
                )

            print(f"first instantiations ({Path(first_software).name})", flush=True)
            first = first_instantiation(bench, first_software, args.first)
    finally:
        for node in nodes:
            reference_env.stop_supervisord(node.root / "instance")
        store.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\ndeployment of {args.partitions} partitions (first run)")
    print(reference_env.table({agent: [run] for agent, run in deployments.items()}))
    print(f"no-op instance run, {args.partitions} deployed started partitions")
    print(reference_env.table(noop))
    print(f"first instantiation of one partition ({Path(first_software).name}), fresh node")
    print(reference_env.table(first))
    promise_races = sum(run.returncode == 2 for run in first.get("slapos node", []))
    if promise_races:
        print(f"  (the reference's promise ran before the service listened {promise_races}x)")
    noop_median = statistics.median(run.wall for run in noop["slapgrid"])
    print(
        f"  no-op slapgrid median {noop_median:.3f} s (target < {NOOP_LIMIT} s: "
        f"{'met' if noop_median < NOOP_LIMIT else 'NOT met'})"
    )
    if venv is not None:
        print("ratio (slapgrid / reference)")
        for what, runs, name, target in (
            ("no-op instance", noop, "slapgrid", NOOP_TARGET),
            ("no-op pass of slapgrid node", noop, WARM, NOOP_TARGET),
            ("first instantiation", first, "slapgrid", FIRST_TARGET),
        ):
            print(reference_env.ratio(what, runs[name], runs["slapos node"], target))
        deployed = deployments["slapgrid"].wall / deployments["slapos node"].wall
        print(f"  {'deployment':<36} wall x{deployed:.3f}")


if __name__ == "__main__":
    main()
