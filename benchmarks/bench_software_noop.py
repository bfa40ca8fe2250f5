"""Benchmark: a no-op `slapgrid software` against a no-op `slapos node software` (1.26.1).

Both agents read the same slapos.cfg, ask the same master (ours, in this process) and find
the same software root, where `--software` Software Releases were built once beforehand:
variants of examples/hello that differ by a comment, so each has its own URL and directory
(`--smoke`: two empty profiles, which build in a second). Each no-op run is a fresh process,
interpreter start included, timed by wall clock; runs of the two agents alternate.
Target: ours <= 1/10 of the reference's wall time.

Run: `.venv/bin/python benchmarks/bench_software_noop.py [--smoke]`.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import reference_env  # noqa: E402
from slapgrid.master.server import MasterServer  # noqa: E402
from slapgrid.master.storage import MasterStore  # noqa: E402
from slapgrid.node.config import load_node_config  # noqa: E402
from slapgrid.node.software.run import run_software  # noqa: E402
from slapgrid.slap.client import SlapClient  # noqa: E402

HELLO = ROOT / "examples" / "hello" / "software.cfg"
COMPUTER = "COMP-BENCH-SOFTWARE"
TARGET = 0.1
WARM = "slapgrid node, warm"  # the same no-op pass in a running agent: no interpreter start


def variants(directory: Path, count: int, empty: bool) -> list[str]:
    """`count` Software Release profiles that differ by a comment only."""
    urls = []
    for index in range(count):
        body = "parts =\n" if empty else f"extends = {HELLO}\n"
        profile = directory / f"software-{index}.cfg"
        profile.write_text(f"[buildout]\n{body}# variant {index}\n")
        urls.append(str(profile))
    return urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--software", type=int, default=5, help="built Software Releases")
    parser.add_argument("--runs", type=int, default=10, help="timed no-op runs per agent")
    parser.add_argument("--smoke", action="store_true", help="2 empty profiles, 3 runs")
    args = parser.parse_args()
    if args.smoke:
        args.software, args.runs = 2, 3
    logging.getLogger("slapgrid.master").setLevel(logging.ERROR)  # the reference's 404s

    try:
        venv: Path | None = reference_env.ensure_venv()
    except (reference_env.Unavailable, reference_env.InstallError) as exc:
        print(f"reference unavailable, measuring slapgrid only: {exc}")
        venv = None

    workdir = reference_env.public_tempdir("bench-software-")
    store = MasterStore(workdir / "master.db", default_computer=COMPUTER)
    try:
        with (
            MasterServer(store, insecure=True) as server,
            SlapClient(server.url, COMPUTER) as client,
        ):
            (workdir / "software").mkdir()
            (workdir / "instance").mkdir()
            config = reference_env.write_node_config(
                workdir / "slapos.cfg",
                master_url=server.url,
                computer_id=COMPUTER,
                software_root=workdir / "software",
                instance_root=workdir / "instance",
            )
            for url in variants(workdir, args.software, empty=args.smoke):
                client.supply(url)
            print(f"building {args.software} Software Releases with slapgrid", flush=True)
            build = reference_env.run_node(reference_env.ours("software", config))
            if build.returncode != 0:
                raise SystemExit(f"the build failed:\n{build.output[-3000:]}")
            print(f"  built in {build.wall:.1f} s", flush=True)

            commands = {
                "slapgrid": reference_env.ours("software", config),
                "(its imports)": reference_env.ours_import("software"),
            }
            if venv is not None:
                commands["slapos node"] = reference_env.reference(venv, "software", config)
            runs: dict[str, list[reference_env.NodeRun]] = {name: [] for name in commands}
            for index in range(args.runs + 1):  # the first round warms caches up, untimed
                for name, command in commands.items():
                    run = reference_env.run_node(command)
                    if run.returncode != 0:
                        raise SystemExit(f"{name} failed:\n{run.output[-3000:]}")
                    if index:
                        runs[name].append(run)
            node_config = load_node_config(config)
            runs[WARM] = reference_env.warm_passes(
                lambda: run_software(node_config, client).status, args.runs
            )
    finally:
        store.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nno-op software run, {args.software} built Software Releases")
    print(reference_env.table(runs))
    if venv is not None:
        print("ratio (slapgrid / reference)")
        for what, name in (("no-op software", "slapgrid"), ("no-op pass of slapgrid node", WARM)):
            print(reference_env.ratio(what, runs[name], runs["slapos node"], TARGET))


if __name__ == "__main__":
    main()
