"""Benchmark: installing a Software Release from the binary cache against building it.

Node 1 (`slapgrid software`) builds a release from source and uploads it to our master's
networkcache (an insecure master in this process, plain HTTP on 127.0.0.1). Node 2, with
an empty software root at the same path (a release's files name absolute paths), installs
it from the cache: `--runs` times, from a new empty software root each time.

The release is examples/hello plus a `zc.recipe.egg` part installing the eggs the cookbook
Software Release (tests/software/cookbook) pins, but the `slapos.*` ones: some forty eggs
from PyPI, one (netifaces) built from its C sdist unless pip's wheel cache has it, into the
release's own egg directory, so each build is cold (about 80 s here). (The cookbook SR
itself could not be built cold while slapgrid's venv had slapos.libnetworkcache, whose
`-nspkg.pth` made `slapos` a namespace package in every process of that interpreter, pip's
build of the slapos.core sdist included; slapgrid now has its own networkcache client, see
docs/networkcache.md.) `--smoke` uses examples/hello, which builds in a few seconds.

With the reference available, `slapos node software` (1.26.1) installs the same archive
from the same cache as well. Every run is a fresh process, interpreter start included.

Printed: the build time, the install times (median, best), the ratio install / build
(target <= 1/10), the archive's size and the installed release's size.

Run: `.venv/bin/python benchmarks/bench_cache.py [--smoke] [--runs N]`.
"""

from __future__ import annotations

import argparse
import configparser
import json
import logging
import os
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import reference_env  # noqa: E402
from slapgrid.master.server import MasterServer  # noqa: E402
from slapgrid.master.storage import MasterStore  # noqa: E402
from slapgrid.node.safety import software_hash  # noqa: E402
from slapgrid.node.state import StateStore  # noqa: E402
from slapgrid.slap.client import SlapClient  # noqa: E402
from support.signing import signer  # noqa: E402

COOKBOOK = ROOT / "tests" / "software" / "cookbook" / "software.cfg"  # its [versions]
HELLO = ROOT / "examples" / "hello" / "software.cfg"
COMPUTER = "COMP-BENCH-CACHE"
TARGET = 0.1
BUILD_TIMEOUT = 1800  # s: the cookbook SR from PyPI on a slow machine
DOWNLOADED = "Extracting archive of cached software release"  # the reference's log line


def config(workdir: Path, name: str, url: str, certificate: str, key: Path | None) -> Path:
    """slapos.cfg (both agents read it): download from the master's cache, upload with
    `key`."""
    path = reference_env.write_node_config(
        workdir / f"{name}.cfg",
        master_url=url + "/",
        computer_id=COMPUTER,
        software_root=workdir / "software",
        instance_root=workdir / "instance",
    )
    reference_env.add_master_cache(path, url, certificate, key)
    return path


def eggs_profile() -> str:
    """examples/hello plus the eggs the cookbook SR pins, but slapos.* (see the docstring)."""
    versions = configparser.ConfigParser(interpolation=None)
    versions.optionxform = str  # type: ignore[assignment,method-assign]
    versions.read(COOKBOOK)
    eggs = [name for name in versions["versions"] if not name.startswith("slapos.")]
    pins = "".join(f"{name} = {value}\n" for name, value in versions["versions"].items())
    return (
        f"[buildout]\nextends = {HELLO}\nparts += eggs\n\n"
        f"[eggs]\nrecipe = zc.recipe.egg\nscripts =\neggs =\n"
        + "".join(f"  {egg}\n" for egg in eggs)
        + f"\n[versions]\n{pins}"
    )


def empty_software_root(workdir: Path) -> Path:
    software = workdir / "software"
    shutil.rmtree(software, ignore_errors=True)
    software.mkdir()
    return software


def size(path: Path) -> int:
    """Bytes of the regular files below `path` (links not followed)."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            file = Path(directory, name)
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def mib(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="installs from the cache per agent")
    parser.add_argument("--smoke", action="store_true", help="examples/hello, 1 install each")
    args = parser.parse_args()
    if args.smoke:
        args.runs = 1
    logging.getLogger("slapgrid.master").setLevel(logging.ERROR)

    venv: Path | None = None
    try:
        venv = reference_env.ensure_venv()
        user = reference_env.node_user(venv / "bin" / "python")
    except (reference_env.Unavailable, reference_env.InstallError) as exc:
        print(f"reference unavailable, measuring slapgrid only: {exc}")
        venv = None

    workdir = reference_env.public_tempdir("bench-cache-")
    store = MasterStore(workdir / "master.db", default_computer=COMPUTER)
    try:
        with (
            MasterServer(store, insecure=True, cache_dir=workdir / "cache") as server,
            SlapClient(server.url, COMPUTER) as client,
        ):
            url = server.url.rstrip("/")
            (workdir / "instance").mkdir()
            key, certificate = signer(workdir, "node1")
            profile = workdir / "software.cfg"
            profile.write_text(f"[buildout]\nextends = {HELLO}\n" if args.smoke else eggs_profile())
            release = str(profile)
            what = "examples/hello" if args.smoke else "hello + the cookbook's eggs"
            client.supply(release)
            builder = config(workdir, "node1", url, certificate, key)
            installer = config(workdir, "node2", url, certificate, None)

            empty_software_root(workdir)
            print(f"node 1 builds {what} from source", flush=True)
            build = reference_env.run_node(
                reference_env.ours("software", builder), timeout=BUILD_TIMEOUT
            )
            if build.returncode != 0:
                raise SystemExit(f"the build failed:\n{build.output[-3000:]}")
            origin = StateStore(workdir / "software").origins()[release]
            print(f"  built in {build.wall:.1f} s ({origin})", flush=True)
            installed_size = size(workdir / "software" / software_hash(release))
            [[entry, _]] = json.loads(
                (workdir / "cache" / "shadir" / software_hash(release)).read_text()
            )
            archive_size = (
                (workdir / "cache" / "shacache" / json.loads(entry)["sha512"]).stat().st_size
            )

            runs: dict[str, list[reference_env.NodeRun]] = {"slapgrid": []}
            if venv is not None:
                runs["slapos node"] = []
            for _ in range(args.runs):
                for name in runs:
                    software = empty_software_root(workdir)
                    if name == "slapgrid":
                        command = reference_env.ours("software", installer)
                    else:
                        reference_env.give_to(user, software)
                        command = reference_env.reference(venv, "software", installer)  # type: ignore[arg-type]
                    run = reference_env.run_node(command, timeout=BUILD_TIMEOUT)
                    if run.returncode != 0:
                        raise SystemExit(f"{name} failed:\n{run.output[-3000:]}")
                    if name == "slapgrid":
                        origin = StateStore(software).origins()[release]
                        if origin != "from cache":
                            raise SystemExit(f"slapgrid did not install from the cache: {origin}")
                    elif DOWNLOADED not in run.output:
                        raise SystemExit(f"the reference built instead:\n{run.output[-3000:]}")
                    runs[name].append(run)
    finally:
        store.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{what}: build from source (node 1), install from the cache")
    rows = {"build, slapgrid": [build]} | {f"install, {n}": r for n, r in runs.items()}
    print(reference_env.table(rows))
    print(f"  archive {mib(archive_size)}, installed release {mib(installed_size)}")
    print("ratio (install from the cache / build from source)")
    for name, measured in runs.items():
        value = statistics.median(r.wall for r in measured) / build.wall
        met = "met" if value <= TARGET else "NOT met"
        print(f"  install, {name:<24} wall x{value:.3f} (target <= {TARGET:g}: {met})")


if __name__ == "__main__":
    main()
