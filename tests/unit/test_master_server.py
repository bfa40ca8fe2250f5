"""The master's listening socket."""

from __future__ import annotations

import socket

from slapgrid.master.server import bind


def test_the_listening_socket_is_tcp_so_connections_get_tcp_nodelay() -> None:
    # asyncio sets TCP_NODELAY on accepted connections only for a socket made as IPPROTO_TCP
    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
