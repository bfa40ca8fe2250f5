"""A real HTTP(S) server on 127.0.0.1 that records requests and answers from a table.

Used to test the client's side of the wire (methods, paths, forms, headers, TLS, statuses).
The real master, with real semantics, is tested in tests/integration/test_master_http.py.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""  # as sent: field order and percent-encoding kept
    raw_query: str = ""


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/xml; charset=utf-8"
    declare_length: bool = True  # False: body runs until the connection closes (HTTP/1.0)
    headers: dict[str, str] = field(default_factory=dict)


Route = Answer | Callable[[Recorded], Answer]


@dataclass
class RecordingServer:
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    host: str = "127.0.0.1"
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = raw.decode("utf-8")
                recorded = Recorded(
                    method=self.command,
                    path=parts.path,
                    query={k: v[0] for k, v in parse_qs(parts.query).items()},
                    form={k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=raw,
                    raw_query=parts.query,
                )
                server.requests.append(recorded)
                route = server.routes.get(parts.path.rsplit("/", 1)[-1], Answer(404, b"unknown"))
                answer = route(recorded) if callable(route) else route
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                if answer.declare_length:
                    self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                # the client may stop reading, as it should on oversized answers
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(answer.body)

            do_GET = do_POST = _handle

        family_server = ThreadingHTTPServer
        if ":" in self.host:

            class V6Server(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            family_server = V6Server
        self.httpd = family_server((self.host, 0), Handler)
        if self.ssl_context is not None:
            self.httpd.socket = self.ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.httpd.server_address[1]}/"

    def __enter__(self) -> RecordingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
