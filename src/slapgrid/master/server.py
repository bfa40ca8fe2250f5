"""Running the master: uvicorn on a socket we bind ourselves, so errors are one line.

`serve()` runs in the foreground (`slapgrid master start`), in this process or in forked
workers (`workers`); `MasterServer` runs the same thing in a background thread (tests,
benchmarks, embedding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import ssl
import sys
import threading
from pathlib import Path
from types import TracebackType

import uvicorn

from slapgrid.errors import SlapgridError
from slapgrid.master.app import create_app
from slapgrid.master.cache.store import CACHE_DIR, CacheStore
from slapgrid.master.collector import pace_collections
from slapgrid.master.connections import HEAD_TIMEOUT, guarded_protocol, raise_file_limit
from slapgrid.master.database import READERS, reader_pool
from slapgrid.master.pki.authority import Authority
from slapgrid.master.state import MasterState
from slapgrid.master.storage import MasterStore, database_url
from slapgrid.master.workers import supervise

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_COMPUTER_ID = "local_computer"
DEFAULT_DATABASE = "slapgrid-master.db"
PKI_DIR = "pki"
SWITCH_INTERVAL = 0.0005
"""Seconds a busy thread keeps the GIL while another waits for it (Python's default: 5 ms).
The event loop of a master serving thousands of nodes is always busy, and a write in a
thread (on PostgreSQL: `runners`) waits for the GIL again after each of its statements:
with 10,000 nodes (bench_fleet.py) requests went from 8 to 14 a second once it was lowered.
Other values, measured since on PostgreSQL x1 (one run each, too noisy to move it): wake-up
p99 748 ms at 5 ms, 80 ms at 1 ms, 23 s at 0.2 ms (the loop spends itself handing over)."""
BACKLOG = 8192
"""Connections waiting to be accepted (capped by the kernel's somaxconn): when a fleet's
nodes all come back at once after a restart, the overflow would be dropped."""
KEEP_ALIVE = 75.0
"""Seconds an idle keep-alive connection is kept: longer than a node's polling period."""


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host (IPv4 or IPv6 literal or name) and port."""
    host = host.strip("[]")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        # IPPROTO_TCP named: asyncio then sets TCP_NODELAY on every connection, so an answer
        # (headers and body: two writes) never waits ~40 ms for the client's delayed ACK
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError as exc:
        raise SlapgridError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SlapgridError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _Server(uvicorn.Server):
    """Stopping answers the open long polls first, so none is cut off with an error.

    `paced`: garbage collection is paced by this server's loop (`collector`); only where
    the process is the master's own, as the collector is turned off process-wide."""

    def __init__(self, config: uvicorn.Config, *, paced: bool = False) -> None:
        super().__init__(config)
        self.paced = paced

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.paced:
            return await super().serve(sockets)
        collector = asyncio.create_task(pace_collections())
        try:
            await super().serve(sockets)
        finally:
            collector.cancel()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.app
        app.state.master.feed.stop()
        await super().shutdown(sockets)


def check_insecure_host(host: str) -> None:
    """Plain HTTP names no caller: only where nothing but this machine can reach it."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host.strip("[]"), None)}
    except OSError as exc:
        raise SlapgridError(f"cannot resolve {host}: {exc}") from None
    if not all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses):
        raise SlapgridError(
            f"--insecure serves plain HTTP to anyone who can reach {host}: "
            "only a loopback address (127.0.0.1, ::1) is allowed"
        )


def check_workers(workers: int, database: str | Path) -> None:
    """Workers share no memory: only PostgreSQL tells each of the others' commits."""
    if workers > 1 and not database_url(database).startswith("postgresql"):
        raise SlapgridError(
            f"{workers} workers need a PostgreSQL database (postgresql://…): "
            "a SQLite database is served by one process"
        )


def _server(
    store: MasterStore,
    log_level: str,
    head_timeout: float,
    authority: Authority | None,
    tls: ssl.SSLContext | None,
    cache: CacheStore | None = None,
    *,
    paced: bool = False,
    render_apart: bool = True,
) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(store, authority, cache, render_apart=render_apart),
        http=guarded_protocol(head_timeout, KEEP_ALIVE, insecure=tls is None),
        ws="none",
        loop="uvloop",  # libuv: the event loop of thousands of connections costs less
        proxy_headers=False,  # the peer is who connected: no X-Forwarded-For believed
        backlog=BACKLOG,
        ssl_context_factory=None if tls is None else lambda _config, _default: tls,
        log_level=log_level,
        log_config=None,  # keep the caller's logging set-up
        access_log=False,  # the app logs each request itself
        lifespan="on",
        timeout_keep_alive=int(KEEP_ALIVE),
        # open long polls (agents waiting for changes) must not hold a shutdown for 60 s:
        # they are cut, and agents simply ask again
        timeout_graceful_shutdown=2,
    )
    return _Server(config, paced=paced)


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    database: str | Path = DEFAULT_DATABASE,
    computer_id: str | None = DEFAULT_COMPUTER_ID,
    *,
    pki_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    insecure: bool = False,
    log_level: str = "info",
    workers: int = 1,
) -> None:
    """Serve the master until interrupted; `computer_id` exists from the start.

    Its CA and server certificate are created in `pki_dir` (default: beside the database)
    at the first start; later starts read them. Its networkcache is kept in `cache_dir`
    (default: `cache/` beside the database). It serves HTTPS, each caller known by its
    client certificate, unless `insecure` (plain HTTP, loopback only, every caller trusted).
    More than one of `workers` (forked processes, `workers.supervise`) needs PostgreSQL.
    """
    if insecure:
        check_insecure_host(host)
    check_workers(workers, database)
    raise_file_limit()
    sys.setswitchinterval(SWITCH_INTERVAL)
    url = database_url(database)
    # the workers' pools together within the server's connections (a clear error if not)
    readers = reader_pool(url, workers) if url.startswith("postgresql") else READERS
    # a render process is a core more for a worker; with a worker per core, only contention
    apart = workers < len(os.sched_getaffinity(0))
    with bind(host, port) as sock:
        directory = Path(pki_dir) if pki_dir else default_pki_dir(database)
        authority = Authority.open(directory)
        cache = CacheStore(cache_dir or default_cache_dir(database))

        def run() -> None:
            tls = None if insecure else authority.server_context([host])
            store = MasterStore(database, default_computer=computer_id, readers=readers)
            try:
                server = _server(
                    store,
                    log_level,
                    HEAD_TIMEOUT,
                    authority,
                    tls,
                    cache,
                    paced=True,
                    render_apart=apart,
                )
                server.run(sockets=[sock])
            finally:
                store.close()

        signal.signal(signal.SIGTERM, _stopped)  # inherited by forked workers
        if workers == 1:
            run()
        else:
            # the schema and the default computer made once, and no connection left to fork
            MasterStore(database, default_computer=computer_id).close()
            supervise(workers, run)


def _stopped(_signum: int, _frame: object) -> None:
    """uvicorn raises the signal it stopped at again once stopped: SIGTERM then ends the
    master through its `finally` clauses (the store closed), as a clean stop: status 0."""
    raise SystemExit(0)


def default_pki_dir(database: str | Path, data_dir: str | Path | None = None) -> Path:
    """`pki/` beside a SQLite database, else in the data directory (or the current one)."""
    return _data_dir(database, data_dir) / PKI_DIR


def default_cache_dir(database: str | Path, data_dir: str | Path | None = None) -> Path:
    """The networkcache's `cache/`, where `pki/` is: beside a SQLite database, else in the
    data directory (or the current one)."""
    return _data_dir(database, data_dir) / CACHE_DIR


def _data_dir(database: str | Path, data_dir: str | Path | None) -> Path:
    url = database_url(database)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.removeprefix("sqlite:///")).parent
    return Path(data_dir or ".")


class MasterServer:
    """A master in a background thread: `with MasterServer(store, authority=ca) as server:
    server.url` serves HTTPS with `ca`'s certificates; `insecure=True` plain HTTP on loopback
    (with no authority, partitions get no certificate). One of the two must be said.

    Its networkcache is kept in `cache_dir`, by default `cache/` beside a SQLite database
    (none for a database in memory or elsewhere: the cache's endpoints answer 404)."""

    def __init__(
        self,
        store: MasterStore,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        authority: Authority | None = None,
        insecure: bool = False,
        log_level: str = "warning",
        head_timeout: float = HEAD_TIMEOUT,
        cache_dir: str | Path | None = None,
        max_upload_bytes: int | None = None,
    ) -> None:
        if insecure:
            check_insecure_host(host)
        elif authority is None:
            raise SlapgridError("a master serves HTTPS with an authority, or is said insecure")
        self.store = store
        self.authority = authority
        self.tls = None if insecure or authority is None else authority.server_context([host])
        in_file = store.url.startswith("sqlite:///") and store.url != "sqlite:///:memory:"
        if cache_dir is None and in_file:
            cache_dir = default_cache_dir(store.url)
        self.cache = None if cache_dir is None else CacheStore(cache_dir)
        if self.cache is not None and max_upload_bytes is not None:
            self.cache.max_upload_bytes = max_upload_bytes
        self._socket = bind(host, port)
        self._server = _server(store, log_level, head_timeout, authority, self.tls, self.cache)
        self.state: MasterState = self._server.config.app.state.master
        """What the endpoints share (the change feed, the document cache)."""
        self.thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        """Where its event loop runs."""

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://[{host}]:{port}/" if ":" in host else f"{scheme}://{host}:{port}/"

    def start(self, timeout: float = 10.0) -> MasterServer:
        self.thread.start()
        for _ in range(int(timeout * 100)):
            if self._server.started or not self.thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not self._server.started:
            raise SlapgridError(f"master did not start within {timeout} s")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self.thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> MasterServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
