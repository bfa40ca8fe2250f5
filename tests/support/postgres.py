"""A throw-away PostgreSQL cluster: Debian's `initdb` and `pg_ctl` in a temporary directory.

The cluster runs as an unprivileged account (PostgreSQL refuses root), listens on a Unix
socket in its own directory only (no TCP port, so nothing else on the machine can reach it),
and trusts local connections. Tests get one database each from `create_database()`.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

PG_USER = "slapgrid-pg"
SUPERUSER = "postgres"


class Unavailable(Exception):
    """No PostgreSQL server programs on this machine."""


def server_programs() -> Path:
    """The `bin/` holding `initdb` and `pg_ctl`: Debian's newest, else the PATH's."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise Unavailable("no PostgreSQL server (initdb): apt-get install postgresql")


def cluster_account() -> pwd.struct_passwd:
    """The account the cluster runs as: this one, or `PG_USER` (created) when root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-d", "/nonexistent", PG_USER],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return pwd.getpwnam(PG_USER)


class Cluster:
    """`with Cluster() as cluster: url = cluster.create_database()`.

    `durable=False` (tests) turns fsync off: what tests write need not survive the machine.
    """

    def __init__(self, *, durable: bool = False, max_connections: int = 200) -> None:
        self.durable = durable
        self.max_connections = max_connections
        self.account = cluster_account()
        self.programs = server_programs()
        self.directory = Path(tempfile.mkdtemp(prefix="slapgrid-pg-"))
        self.data = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self._numbers = itertools.count(1)

    def url(self, database: str = SUPERUSER) -> str:
        """A SQLAlchemy URL of one of the cluster's databases, through its socket."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def start(self) -> Cluster:
        self.socket_dir.mkdir()
        os.chown(self.directory, self.account.pw_uid, self.account.pw_gid)
        os.chown(self.socket_dir, self.account.pw_uid, self.account.pw_gid)
        self._run(
            "initdb",
            *("-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"),
            *("--locale=C", "--no-sync"),
        )
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": str(self.max_connections),
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self._start_server()
        return self

    def restart(self) -> None:
        """Stop the server (fast: every session cut) and start it again, as an upgrade does."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._start_server()

    def _start_server(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"), "-w", "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        """A new database, empty or a copy of `template` (which nobody may be connected to):
        its URL."""
        name = name or f"test_{next(self._numbers)}"
        self.psql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def psql(self, sql: str, database: str = SUPERUSER) -> str:
        """Run SQL with `psql` (no driver needed): what it prints, unaligned."""
        done = subprocess.run(
            [
                *("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                *("-h", str(self.socket_dir), "-U", SUPERUSER, "-d", database, "-c", sql),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"psql: {done.stderr.strip()}")
        return done.stdout

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.programs / program), *args],
            user=self.account.pw_uid,
            group=self.account.pw_gid,
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode:
            log = self.directory / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed: {done.stderr.strip()} {tail}")

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
