"""`make demo`: the main job end to end, on the embedded defaults, everything under ./demo.

An embedded master on 127.0.0.1 over HTTPS (its CA made at its first start, in demo/pki),
a certificate for the node and one for a user, partitions formatted in demo/instance, the
example Software Release (examples/hello) supplied, requested, built and deployed; then its
service is asked for a page, its promise checked and its connection parameter shown.
Each step is a plain `slapgrid` command, printed before it runs, so it can be replayed.
Run again, it reuses demo/: the master's CA, the database and the certificates.
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOFTWARE = ROOT / "examples" / "hello" / "software.cfg"
COMPUTER = "slapgrid-demo"
INSTANCE = "hello"
USER = "demo"


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


def credentials(demo: Path, holder: str) -> tuple[Path, Path, Path]:
    """Where `slapgrid master computer|user add --out` writes a holder's key, cert and CA."""
    out = demo / "certificates" / holder
    return out / "key.pem", out / "cert.pem", out / "ca.pem"


def write_config(demo: Path, port: int) -> Path:
    for name in ("instance", "software", "certificates/partitions"):
        (demo / name).mkdir(parents=True, exist_ok=True)
    node_key, node_cert, ca = credentials(demo, "node")
    user_key, user_cert, user_ca = credentials(demo, "user")
    config = demo / "slapos.cfg"
    config.write_text(
        f"""[slapos]
master_url = https://127.0.0.1:{port}/
computer_id = {COMPUTER}
key_file = {node_key}
cert_file = {node_cert}
master_ca_file = {ca}
certificate_repository_path = {demo / "certificates" / "partitions"}
instance_root = {demo / "instance"}
software_root = {demo / "software"}
software_min_free_space = 100M
instance_min_free_space = 100M

[slapformat]
partition_amount = 3
alter_user = false

[slapconsole]
key_file = {user_key}
cert_file = {user_cert}
master_ca_file = {user_ca}

[slapproxy]
host = 127.0.0.1
port = {port}
database_uri = {demo / "master.db"}
"""
    )
    return config


def wait_for_master(
    port: int, ca: Path, master: subprocess.Popen[bytes], timeout: float = 30
) -> None:
    """Until the master completes a TLS handshake, its certificate verified against its CA
    (made at its first start): it only accepts connections once it serves."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if master.poll() is not None:
            raise SystemExit("demo: the master exited; see demo/master.log")
        try:
            context = ssl.create_default_context(cafile=str(ca))
            address = ("127.0.0.1", port)
            with (
                socket.create_connection(address, timeout=2) as sock,
                context.wrap_socket(sock, server_hostname="127.0.0.1"),
            ):
                return
        except ssl.SSLCertVerificationError as exc:
            raise SystemExit(f"demo: the master's certificate is not from {ca}: {exc}") from None
        except OSError:  # no CA yet, not listening yet
            time.sleep(0.2)
    raise SystemExit("demo: the master did not answer in time; see demo/master.log")


def add_credentials(demo: Path, config: Path) -> None:
    """The node's and the user's certificates, once: the commands never replace files."""
    cfg = ["--configuration-file", str(config)]
    for holder, command in (
        ("node", ["computer", "add", COMPUTER]),
        ("user", ["user", "add", USER]),
    ):
        if all(path.is_file() for path in credentials(demo, holder)):
            print(f"\ndemo: reusing the {holder}'s certificate in {demo / 'certificates' / holder}")
            continue
        slapgrid("master", *command, "--out", str(demo / "certificates" / holder), *cfg)


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
        wait_for_master(port, demo / "pki" / "ca.pem", master)
        add_credentials(demo, config)
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
