"""The reference implementation (slapos.core 1.26.1) for interop tests and benchmarks.

Everything both need to run slapgrid and the reference side by side: the reference's own
virtual environment (`.venv-ref`), a `slapos proxy`, node configuration files both agents
read, the account the reference's node commands can drop privileges to, and measured runs
of node commands. Tests wrap these in fixtures (tests/interop/conftest.py); benchmarks
import this module through `sys.path`.

The reference's node commands need Python >= 3.12 (1.26.1 cannot import them on 3.11).
Run as root, they refuse to work in directories owned by root (they drop privileges to the
owner and refuse uid 0): `node_user()` provides another account, which must be able to
execute both interpreters, so every directory above them must be traversable.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from filelock import FileLock

from support.addresses import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-ref"
PACKAGES = ("slapos.core==1.26.1", "slapos.libnetworkcache")
INSTALL_TIMEOUT = 1800
NODE_USER = "slapinterop"
"""The account owning the directories the reference works in when it runs as root."""


class Unavailable(Exception):
    """The reference cannot run on this machine; the message says why (tests skip)."""


class InstallError(Exception):
    """Installing the reference failed although it should have worked (tests fail)."""


# --- the reference's virtual environment -----------------------------------------------


def _version(python: str) -> tuple[int, int] | None:
    try:
        result = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    major, minor = result.stdout.split()
    return int(major), int(minor)


def find_python() -> str | None:
    """A Python >= 3.12 from PATH (python3.12, python3.13) or pyenv."""
    candidates = [shutil.which(name) for name in ("python3.12", "python3.13")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3")))
    for candidate in filter(None, candidates):
        version = _version(candidate)
        if version is not None and version >= (3, 12):
            return candidate
    return None


def usable(venv: Path) -> bool:
    python = venv / "bin" / "python"
    if not python.exists():
        return False
    check = "import slapos.slap, slapos.proxy, slapos.libnetworkcache, slapos.grid.slapgrid"
    return subprocess.run([python, "-c", check], capture_output=True, timeout=120).returncode == 0


def ensure_venv(venv: Path = VENV) -> Path:
    """`venv` with slapos.core 1.26.1 and slapos.libnetworkcache, created if missing.

    Raises `Unavailable` without a Python >= 3.12, `InstallError` if pip fails.
    """
    with FileLock(Path(tempfile.gettempdir()) / "slapgrid-venv-ref.lock"):
        if usable(venv):
            return venv
        python = find_python()
        if python is None:
            raise Unavailable(
                "the reference needs Python >= 3.12 (python3.12/3.13 or ~/.pyenv) for 1.26.1"
            )
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
        result = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", *PACKAGES],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        if result.returncode != 0 or not usable(venv):
            raise InstallError(f"cannot install {' '.join(PACKAGES)}:\n{result.stderr[-3000:]}")
        return venv


# --- processes and servers ------------------------------------------------------------


@contextlib.contextmanager
def serving(
    command: Sequence[str],
    url: str,
    log: Path,
    probe: str = "getRunId",
    verify: ssl.SSLContext | bool = True,
    start_timeout: float = 60,
) -> Iterator[str]:
    """Start a server process, wait until `url + probe` answers (any status: an HTTPS
    master may refuse a caller without certificate), yield `url`, then stop it."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                httpx.get(url + probe, timeout=1, verify=verify)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{command[0]} did not start:\n{log.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def reference_proxy(
    venv: Path, workdir: Path, computer: str
) -> contextlib.AbstractContextManager[str]:
    """`slapos proxy start` on a free port with its database in `workdir`; yields its URL."""
    port = free_port()
    config = workdir / "slapos-proxy.cfg"
    config.write_text(
        f"[slapos]\ncomputer_id = {computer}\n[slapproxy]\nhost = 127.0.0.1\nport = {port}\n"
        f"database_uri = {workdir / 'proxy.db'}\n"
    )
    command = [str(venv / "bin" / "slapos"), "proxy", "start", "--cfg", str(config)]
    return serving(command, f"http://127.0.0.1:{port}/", workdir / "proxy.log")


@dataclass(frozen=True)
class NodeRun:
    """One run of a node command: exit code, merged output, wall time, peak memory."""

    returncode: int
    output: str
    wall: float  # seconds, interpreter start included
    max_rss: int  # KiB: the largest of the command and the children it waited for


# Started by `run_node` to start the command: Linux carries a process's peak RSS over to the
# program it execs, so a command forked straight from a big process (this one, maybe with a
# master inside) would report at least that process's size. This launcher is small.
_LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
os.write(int(sys.argv[1]), b"%r %d" % (time.perf_counter() - started, usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_node(argv: Sequence[str], *, timeout: float = 600) -> NodeRun:
    """Run a node command to completion, measuring it (and what it waited for) alone."""
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as output, os.fdopen(read_end, "rb") as measures:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(write_end), *argv],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            pass_fds=(write_end,),
            start_new_session=True,  # a timeout kills the command too
        )
        os.close(write_end)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        measured = measures.read().split()
        output.seek(0)
        text = output.read().decode(errors="replace")
    if len(measured) != 2:
        return NodeRun(process.returncode or -1, text, float(timeout), 0)
    return NodeRun(process.returncode, text, float(measured[0]), int(measured[1]))


def ours(command: str, config: Path, *flags: str) -> list[str]:
    """`python -m slapgrid <command> --cfg <config>` with this interpreter."""
    return [sys.executable, "-m", "slapgrid", command, "--cfg", str(config), *flags]


def ours_import(command: str) -> list[str]:
    """Only the imports of `slapgrid <command>` (the CLI, the client, the command's module):
    the share of such a run spent starting before any work."""
    modules = f"slapgrid.cli.main, slapgrid.slap.client, slapgrid.node.{command}"
    return [sys.executable, "-c", f"import {modules}"]


def reference(venv: Path, command: str, config: Path, *flags: str) -> list[str]:
    """`slapos node <command> --cfg <config>` of the reference venv."""
    return [str(venv / "bin" / "slapos"), "node", command, "--cfg", str(config), *flags]


# --- the node's directories, account and configuration -------------------------------


def node_user(*pythons: str | Path) -> pwd.struct_passwd:
    """The account that owns the node's directories and can run every one of `pythons`.

    Not root: the current account (the reference then runs without dropping privileges).
    Root: `NODE_USER`, created if missing. Raises `Unavailable` if it cannot run them.
    """
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        entry = pwd.getpwnam(NODE_USER)
    except KeyError:
        home, shell = "/nonexistent", "/usr/sbin/nologin"
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-d", home, "-s", shell, NODE_USER],
            check=True,
            capture_output=True,
            timeout=60,
        )
        entry = pwd.getpwnam(NODE_USER)
    for python in pythons:
        try:
            result = subprocess.run(
                [str(python), "-c", ""],
                user=entry.pw_uid,
                group=entry.pw_gid,
                capture_output=True,
                timeout=60,
            )
            problem = result.stderr.decode().strip() if result.returncode else ""
        except OSError as exc:
            problem = exc.strerror or str(exc)
        if problem:
            raise Unavailable(
                f"user {NODE_USER} cannot run {python} ({problem}): make every directory "
                f"above it traversable by others (here: chmod o+x /root)"
            )
    return entry


def give_to(user: pwd.struct_passwd, *paths: Path) -> None:
    """chown -R each path to `user`."""
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)
        for child in path.rglob("*"):
            os.chown(child, user.pw_uid, user.pw_gid, follow_symlinks=False)


def public_tempdir(prefix: str) -> Path:
    """A temporary directory other accounts can traverse (pytest's base directory is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def write_node_config(
    path: Path,
    *,
    master_url: str,
    computer_id: str,
    software_root: Path,
    instance_root: Path,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """A slapos.cfg both agents read, with the reference's pid files next to it."""
    options = {
        "master_url": master_url,
        "computer_id": computer_id,
        "software_root": str(software_root),
        "instance_root": str(instance_root),
        "root_check": "false",
        "software_min_free_space": "0",
        "instance_min_free_space": "0",
        "pidfile_software": str(path.with_suffix(".software.pid")),
        "pidfile_instance": str(path.with_suffix(".instance.pid")),
        "pidfile_report": str(path.with_suffix(".report.pid")),
        **(extra or {}),
    }
    path.write_text("[slapos]\n" + "".join(f"{k} = {v}\n" for k, v in options.items()))
    return path


def add_master_cache(
    path: Path, master_url: str, certificates: str, signature_key: Path | None
) -> None:
    """A `[networkcache]` both agents read: download from the master's cache, and upload to
    it, signed with `signature_key`, when given; `certificates` (PEM) are trusted."""
    url = master_url.rstrip("/")
    options = {
        "download-binary-cache-url": f"{url}/shacache",
        "download-binary-dir-url": f"{url}/shadir",
    }
    if signature_key is not None:
        options |= {
            "upload-binary-cache-url": f"{url}/shacache",
            "upload-binary-dir-url": f"{url}/shadir",
            "signature-private-key-file": str(signature_key),
        }
    pem = "".join(f"  {line}\n" for line in certificates.splitlines())
    section = "".join(f"{key} = {value}\n" for key, value in options.items())
    with path.open("a") as f:
        f.write(f"[networkcache]\n{section}signature-certificate-list =\n{pem}")


def tls_options(root: Path, key_file: Path, cert_file: Path) -> dict[str, str]:
    """The reference node's options for an HTTPS master: its computer's key and certificate,
    and where it writes its partitions' (`root/certificates`, made), which their recipes
    use. No `master_ca_file`: 1.26.1 refuses one (NotImplementedError) and never verifies
    the master."""
    repository = root / "certificates"
    repository.mkdir(mode=0o755, exist_ok=True)
    return {
        "key_file": str(key_file),
        "cert_file": str(cert_file),
        "certificate_repository_path": str(repository),
    }


def stop_supervisord(instance_root: Path, timeout: float = 30) -> None:
    """Stop the node supervisord of `instance_root` (either agent's) and its programs."""
    pid_file = instance_root / "var" / "run" / "supervisord.pid"
    try:
        process = psutil.Process(int(pid_file.read_text().strip()))
        if str(instance_root / "etc" / "supervisord.conf") not in " ".join(process.cmdline()):
            return  # a stale pid file: that pid is someone else's now
        process.terminate()
        process.wait(timeout)
    except (OSError, ValueError, psutil.NoSuchProcess):
        return
    except psutil.TimeoutExpired:
        process.kill()


# --- comparing measured runs ------------------------------------------------------------


def warm_passes(function: Callable[[], int], runs: int) -> list[NodeRun]:
    """`runs` timed calls of `function` in this process, after an untimed one.

    This is a pass of the long-running `slapgrid node`, which calls the same functions as
    the one-shot commands without starting an interpreter. Peak RSS is not measured (0):
    this process holds the benchmark too.
    """
    passes = []
    for index in range(runs + 1):
        started = time.perf_counter()
        code = function()
        wall = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"a warm pass returned {code}")
        if index:
            passes.append(NodeRun(code, "", wall, 0))
    return passes


def _rss(runs: Sequence[NodeRun]) -> str:
    peak = max(run.max_rss for run in runs)
    return f"{peak / 1024:7.1f} MiB" if peak else f"{'-':>11}"


def table(rows: Mapping[str, Sequence[NodeRun]]) -> str:
    """Median and best wall time, and the largest peak RSS, of each command's runs."""
    lines = [f"  {'':<22} {'median':>9} {'best':>9} {'peak RSS':>11}   runs"]
    for name, runs in rows.items():
        walls = sorted(run.wall for run in runs)
        lines.append(
            f"  {name:<22} {statistics.median(walls):8.3f}s {walls[0]:8.3f}s"
            f" {_rss(runs)}   {len(runs)}"
        )
    return "\n".join(lines)


def ratio(what: str, ours: Sequence[NodeRun], theirs: Sequence[NodeRun], target: float) -> str:
    """`what`: the ratio of median wall times (ours / reference) against its target."""
    value = statistics.median(r.wall for r in ours) / statistics.median(r.wall for r in theirs)
    met = "met" if value <= target else "NOT met"
    line = f"  {what:<36} wall x{value:.3f} (target <= {target:g}: {met})"
    memory = max(r.max_rss for r in ours) / max(r.max_rss for r in theirs)
    return line + (f", peak RSS x{memory:.2f}" if memory else "")
