"""Addresses for the servers and partitions tests start, apart from any other run's."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick, released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loopback_network() -> str:
    """A random /24 of 127.0.0.0/8 for a node's partitions.

    Formatted nodes otherwise all take 127.1.0.x, and the example's services a fixed port:
    two suites on one machine (or two nodes of one suite) would fight for the same address.
    """
    return f"127.{random.randint(2, 254)}.{random.randint(0, 255)}.0/24"
