"""supervisord's XML-RPC interface over its unix socket, with timeouts and typed errors."""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

from slapgrid.node.supervisor.errors import SupervisorError, SupervisorFault

_UNREACHABLE = (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError)


class _UnixConnection(UnixStreamHTTPConnection):
    """supervisor's unix-socket connection, with the timeout it lacks."""

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socketfile)


def _proxy(socket_path: Path, timeout: float) -> xmlrpc.client.ServerProxy:
    transport = SupervisorTransport(serverurl=f"unix://{socket_path}")

    def connect() -> _UnixConnection:
        connection = _UnixConnection("localhost", timeout=timeout)
        connection.socketfile = str(socket_path)
        return connection

    transport._get_connection = connect  # the one hook SupervisorTransport offers
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


class SupervisorRpc:
    """The `supervisor` namespace of one supervisord's XML-RPC interface."""

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """One call; a refusal is a SupervisorFault, no answer a SupervisorError."""
        proxy = _proxy(self.socket_path, timeout or self.timeout)
        try:
            return getattr(proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as fault:
            raise SupervisorFault(method, fault) from None
        except _UNREACHABLE as exc:
            raise SupervisorError(
                f"supervisord is not reachable on {self.socket_path}: {exc}"
            ) from None

    def state(self) -> str | None:
        """supervisord's state name (RUNNING, SHUTDOWN, …), None when nobody answers."""
        if not self.socket_path.exists():
            return None
        try:
            return self.call("getState", timeout=5.0)["statename"]
        except SupervisorError:
            return None
