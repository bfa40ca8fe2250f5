"""`make demo`: the main job end to end, on the embedded defaults, everything under ./demo.

An embedded master on 127.0.0.1 over HTTPS (its CA made at its first start, in demo/pki),
a certificate for the node and one for a user, partitions formatted in demo/instance, the
example Software Release (examples/hello) supplied, requested, built and deployed; then its
service is asked for a page, its promise checked and its connection parameter shown.
The node uploads the release it built to the master's binary cache (`/shacache`,
`/shadir`), signed with a key `slapgrid master signing-key` made; a second node
(slapgrid-demo-2, its own roots demo/instance-2 and demo/software-2) installs it from
there without building it, and serves an instance of it too.
Each step is a plain `slapgrid` command, printed before it runs, so it can be replayed.
Run again, it reuses demo/: the master's CA, the database, the certificates, the cache.
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
COMPUTER_2 = "slapgrid-demo-2"
INSTANCE_2 = "hello-2"


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


def signing_certificate(demo: Path) -> str:
    """The binary cache's signing key, made once: its certificate's PEM text."""
    signing = demo / "signing"
    if not (signing / "signature.crt").is_file():
        slapgrid("master", "signing-key", "--out", str(signing), "--name", "slapgrid demo")
    return (signing / "signature.crt").read_text(encoding="ascii")


def networkcache_section(demo: Path, port: int, holder: str, certificate: str, upload: bool) -> str:
    """`[networkcache]`: the master's cache, reached with the node's own certificate; the
    first node also uploads, signing with the demo's key; both trust its certificate."""
    key, cert, ca = credentials(demo, holder)
    cache, directory = f"https://127.0.0.1:{port}/shacache", f"https://127.0.0.1:{port}/shadir"
    lines = [
        "[networkcache]",
        f"download-binary-cache-url = {cache}",
        f"download-binary-dir-url = {directory}",
    ]
    if upload:
        lines += [
            f"upload-binary-cache-url = {cache}",
            f"upload-binary-dir-url = {directory}",
            f"signature-private-key-file = {demo / 'signing' / 'signature.key'}",
        ]
    for service in ("shacache", "shadir"):
        lines += [
            f"{service}-ca-file = {ca}",
            f"{service}-cert-file = {cert}",
            f"{service}-key-file = {key}",
        ]
    lines.append("signature-certificate-list =")
    lines += [f"  {line}" for line in certificate.strip().splitlines()]
    return "\n".join(lines) + "\n"


def write_config(demo: Path, port: int, certificate: str, node: int = 1) -> Path:
    """Node 1's slapos.cfg (which the master reads too), or node 2's slapos-2.cfg."""
    suffix, computer = ("", COMPUTER) if node == 1 else (f"-{node}", COMPUTER_2)
    holder = f"node{suffix}"
    instance, software = demo / f"instance{suffix}", demo / f"software{suffix}"
    partitions = demo / "certificates" / f"partitions{suffix}"
    for directory in (instance, software, partitions):
        directory.mkdir(parents=True, exist_ok=True)
    node_key, node_cert, ca = credentials(demo, holder)
    user_key, user_cert, user_ca = credentials(demo, "user")
    config = demo / f"slapos{suffix}.cfg"
    config.write_text(
        f"""[slapos]
master_url = https://127.0.0.1:{port}/
computer_id = {computer}
key_file = {node_key}
cert_file = {node_cert}
master_ca_file = {ca}
certificate_repository_path = {partitions}
instance_root = {instance}
software_root = {software}
software_min_free_space = 100M
instance_min_free_space = 100M

[slapformat]
partition_amount = {3 if node == 1 else 1}
alter_user = false
ipv4_local_network = 127.{node}.0.0/16

[slapconsole]
key_file = {user_key}
cert_file = {user_cert}
master_ca_file = {user_ca}

[slapproxy]
host = 127.0.0.1
port = {port}
database_uri = {demo / "master.db"}

"""
        + networkcache_section(demo, port, holder, certificate, upload=node == 1)
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
    """The nodes' and the user's certificates, once: the commands never replace files."""
    cfg = ["--configuration-file", str(config)]
    for holder, command in (
        ("node", ["computer", "add", COMPUTER]),
        ("node-2", ["computer", "add", COMPUTER_2]),
        ("user", ["user", "add", USER]),
    ):
        if all(path.is_file() for path in credentials(demo, holder)):
            print(f"\ndemo: reusing the {holder}'s certificate in {demo / 'certificates' / holder}")
            continue
        slapgrid("master", *command, "--out", str(demo / "certificates" / holder), *cfg)


def ask(instance: str, cfg: list[str]) -> str:
    """The instance's published URL, and its page fetched."""
    shown = slapgrid("show", instance, "--json", *cfg, capture=True)
    url = json.loads(shown)["connection"]["url"]
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = answer.read().decode("utf-8", "replace").strip()
    print(f"\n$ curl {url}\n{body}")
    return url


def origin(cfg: list[str]) -> str:
    """Where the node's copy of the example release came from (`slapgrid status`)."""
    command = [sys.executable, "-m", "slapgrid", "status", "--json", *cfg]
    answer = subprocess.run(command, text=True, capture_output=True, check=False)
    status = json.loads(answer.stdout or "{}")
    found = [s.get("origin") or "" for s in status.get("software", []) if s["url"] == str(SOFTWARE)]
    return found[0] if found else "not installed"


def second_node(demo: Path, port: int, certificate: str) -> None:
    """Node 2, an empty software root: the release comes from the master's cache."""
    cfg2 = ["--configuration-file", str(write_config(demo, port, certificate, node=2))]
    slapgrid("format", *cfg2)
    slapgrid("supply", str(SOFTWARE), COMPUTER_2, *cfg2)
    slapgrid("request", INSTANCE_2, str(SOFTWARE), "--node", f"computer_guid={COMPUTER_2}", *cfg2)
    slapgrid(*cfg2)
    url = ask(INSTANCE_2, cfg2)
    slapgrid("status", *cfg2)
    came = origin(cfg2)
    if came != "from cache":
        raise SystemExit(f"demo: node 2 did not install the release from the cache: {came}")
    print(
        f"\ndemo: node {COMPUTER_2!r} installed the release {came} (nothing built); "
        f"the service of instance {INSTANCE_2!r} answers at {url}."
    )


def shutdown(cfg: list[str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "slapgrid", "supervisorctl", *cfg, "shutdown"],
        capture_output=True,
        check=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave master and services running")
    parser.add_argument("--directory", type=Path, default=ROOT / "demo")
    options = parser.parse_args()
    demo = options.directory.resolve()
    demo.mkdir(parents=True, exist_ok=True)
    port = free_port()
    certificate = signing_certificate(demo)
    config = write_config(demo, port, certificate)
    cfg = ["--configuration-file", str(config)]
    cfg2 = ["--configuration-file", str(demo / "slapos-2.cfg")]
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
        slapgrid(*cfg)  # the classic run: software, instance, report; uploads what it built
        url = ask(INSTANCE, cfg)
        slapgrid("status", *cfg)
        print(
            f"\ndemo: the service of instance {INSTANCE!r} answers at {url}, its promise is "
            "green and its connection parameter is published."
        )
        if not any((demo / "cache" / "shadir").glob("*")):  # a demo/ from before the cache
            print("\ndemo: the master's cache is empty: rebuilding to upload the release")
            slapgrid("software", "--force", *cfg)
        second_node(demo, port, certificate)
    finally:
        if not options.keep:
            shutdown(cfg)
            if (demo / "slapos-2.cfg").is_file():
                shutdown(cfg2)
            master.terminate()
            master.wait(10)
        else:
            print(f"demo: master (pid {master.pid}) and services left running (--keep)")


if __name__ == "__main__":
    main()
