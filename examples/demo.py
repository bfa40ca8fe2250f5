"""`make demo`: the main job end to end, on the embedded defaults, everything under ./demo.

An embedded master on 127.0.0.1, partitions formatted in demo/instance, the example
Software Release (examples/hello) supplied, requested, built and deployed; then its
service is asked for a page, its promise checked and its connection parameter shown.
Each step is a plain `slapgrid` command, printed before it runs, so it can be replayed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOFTWARE = ROOT / "examples" / "hello" / "software.cfg"
COMPUTER = "slapgrid-demo"
INSTANCE = "hello"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slapgrid(*args: str, capture: bool = False) -> str:
    command = [sys.executable, "-m", "slapgrid", *args]
    print(f"\n$ slapgrid {shlex.join(args)}", flush=True)
    result = subprocess.run(command, text=True, capture_output=capture, check=False)
    if capture:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"demo: `slapgrid {args[0]}` exited with {result.returncode}")
    return result.stdout if capture else ""


def write_config(demo: Path, port: int) -> Path:
    for name in ("instance", "software", "certificates"):
        (demo / name).mkdir(parents=True, exist_ok=True)
    config = demo / "slapos.cfg"
    config.write_text(
        f"""[slapos]
master_url = http://127.0.0.1:{port}/
computer_id = {COMPUTER}
instance_root = {demo / "instance"}
software_root = {demo / "software"}
software_min_free_space = 100M
instance_min_free_space = 100M

[slapformat]
partition_amount = 3
alter_user = false

[slapproxy]
host = 127.0.0.1
port = {port}
database_uri = {demo / "master.db"}
"""
    )
    return config


def wait_for_master(port: int, master: subprocess.Popen[bytes], timeout: float = 30) -> None:
    url = f"http://127.0.0.1:{port}/getFullComputerInformation?computer_id={COMPUTER}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if master.poll() is not None:
            raise SystemExit("demo: the master exited; see demo/master.log")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("demo: the master did not answer in time; see demo/master.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave master and services running")
    parser.add_argument("--directory", type=Path, default=ROOT / "demo")
    options = parser.parse_args()
    demo = options.directory.resolve()
    port = free_port()
    config = write_config(demo, port)
    cfg = ["--configuration-file", str(config)]
    log = (demo / "master.log").open("ab")
    print(f"$ slapgrid master start --configuration-file {config} &", flush=True)
    master = subprocess.Popen(
        [sys.executable, "-m", "slapgrid", "master", "start", *cfg],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_master(port, master)
        slapgrid("format", *cfg)
        slapgrid("supply", str(SOFTWARE), COMPUTER, *cfg)
        slapgrid("request", INSTANCE, str(SOFTWARE), *cfg)
        slapgrid(*cfg)  # the classic run: software, instance, report
        shown = slapgrid("show", INSTANCE, "--json", *cfg, capture=True)
        url = json.loads(shown)["connection"]["url"]
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = answer.read().decode("utf-8", "replace").strip()
        print(f"\n$ curl {url}\n{body}")
        slapgrid("status", *cfg)
        print(
            f"\ndemo: the service of instance {INSTANCE!r} answers at {url}, its promise is "
            "green and its connection parameter is published."
        )
    finally:
        if not options.keep:
            subprocess.run(
                [sys.executable, "-m", "slapgrid", "supervisorctl", *cfg, "shutdown"],
                capture_output=True,
                check=False,
            )
            master.terminate()
            master.wait(10)
        else:
            print(f"demo: master (pid {master.pid}) and services left running (--keep)")


if __name__ == "__main__":
    main()
