"""A test-only networkcache (shacache + shadir) on 127.0.0.1: what slapos.libnetworkcache
calls, nothing else, with knobs to serve hostile answers.

POST /shacache stores a body under its SHA-512 (201, the hex digest); GET /shacache/<sha>
returns it; PUT /shadir/<key> adds a `[entry, signature]` pair; GET /shadir/<key> lists
them (JSON).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Store:
    blobs: dict[str, bytes] = field(default_factory=dict)
    entries: dict[str, list[list[str]]] = field(default_factory=dict)
    serve: Callable[[bytes], bytes] = lambda body: body  # tampering with downloads
    truncate: bool = False  # announce the whole length, send half, hang up


class Handler(BaseHTTPRequestHandler):
    server: CacheServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _reply(self, status: int, body: bytes = b"", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_GET(self) -> None:
        store = self.server.store
        kind, _, name = self.path.strip("/").partition("/")
        if kind == "shacache" and name in store.blobs:
            body = store.serve(store.blobs[name])
            if store.truncate:
                self._reply(200, body[: len(body) // 2], length=len(body))
                self.close_connection = True
            else:
                self._reply(200, body)
        elif kind == "shadir" and name in store.entries:
            self._reply(200, json.dumps(store.entries[name]).encode())
        else:
            self._reply(404)

    def do_POST(self) -> None:
        body = self._body()
        digest = hashlib.sha512(body).hexdigest()
        self.server.store.blobs[digest] = body
        self._reply(201, digest.encode())

    def do_PUT(self) -> None:
        key = self.path.strip("/").partition("/")[2]
        entry = json.loads(self._body())
        self.server.store.entries.setdefault(key, []).append(entry)
        self._reply(201)


class CacheServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.store = Store()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def networkcache_server() -> Iterator[CacheServer]:
    server = CacheServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
