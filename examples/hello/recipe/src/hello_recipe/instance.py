"""Recipes run by the instance profile, inside a partition.

`configuration` asks the master for this partition's parameters, `service` writes the
program supervisord runs, `promise` the health check the node agent runs, and `publish`
sends the connection parameters back to the master.
"""

from __future__ import annotations

import html
import ipaddress
import json
import os
import re
import shlex
import sys

import zc.buildout

from .slap import Master, SlapCallError

BASE_PORT = 8080
PROMISE_CODE = """\
import sys, urllib.request
url = sys.argv[1]
try:
    with urllib.request.urlopen(url, timeout=10) as answer:
        status = answer.status
except Exception as exc:
    sys.exit(f"{url} does not answer: {exc}")
print(f"{url} answered {status}")
"""


def _write(path: str, content: str, mode: int) -> str:
    """Replace `path` atomically so supervisord never starts a half-written script."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(temporary, mode)
    os.replace(temporary, path)
    return path


def _master(buildout) -> Master:
    connection = buildout["slap-connection"]
    return Master(
        connection["server-url"],
        connection["computer-id"],
        connection["partition-id"],
        key_file=connection.get("key-file", ""),
        cert_file=connection.get("cert-file", ""),
    )


def first_ipv4(ip_list) -> str:
    """The first IPv4 address of the partition's `ip_list` ((interface, address) pairs)."""
    for entry in ip_list or ():
        address = entry[-1] if isinstance(entry, (list, tuple)) else entry
        try:
            if ipaddress.ip_address(str(address)).version == 4:
                return str(address)
        except ValueError:
            continue
    return "127.0.0.1"


def default_port(partition_id: str) -> int:
    """8080 + the partition number, so partitions of one computer do not collide."""
    match = re.search(r"(\d+)$", partition_id)
    return BASE_PORT + (int(match.group(1)) if match else 0)


class Configuration:
    """Fetch the partition's parameters from the master (registerComputerPartition)."""

    def __init__(self, buildout, name, options):
        partition_id = buildout["slap-connection"]["partition-id"]
        try:
            parameters = _master(buildout).parameters()
        except SlapCallError as exc:
            raise zc.buildout.UserError(f"[{name}] {exc}") from None
        if isinstance(parameters.get("_"), str):  # parameters sent JSON-serialised
            try:
                parameters = {**parameters, **json.loads(parameters["_"])}
            except ValueError:
                raise zc.buildout.UserError(f"[{name}] parameter '_' is not JSON") from None
        port = parameters.get("port", default_port(partition_id))
        try:
            port = int(port)
        except (TypeError, ValueError):
            port = -1
        if not 0 < port < 65536:
            raise zc.buildout.UserError(
                f"[{name}] instance parameter 'port' must be a TCP port, not {parameters['port']!r}"
            )
        options["ipv4"] = first_ipv4(parameters.get("ip_list"))
        options["port"] = str(port)
        options["title"] = str(parameters.get("instance_title") or partition_id)

    def install(self):
        return ()

    update = install


class Service:
    """A static HTTP server for the partition, as a script in `etc/service`."""

    def __init__(self, buildout, name, options):
        self.options = options
        options.setdefault("python", sys.executable)
        host = options["ip"]
        if ":" in host:
            host = f"[{host}]"
        options["url"] = f"http://{host}:{options['port']}/"

    def install(self):
        options = self.options
        page = os.path.join(options["document-root"], "index.html")
        title = html.escape(options.get("title", "slapgrid"))
        _write(page, f"<h1>Hello from {title}</h1>\n", 0o640)
        command = [
            options["python"], "-I", "-m", "http.server",
            "--bind", options["ip"], "--directory", options["document-root"], options["port"],
        ]  # fmt: skip
        script = "#!/bin/sh\nexec " + shlex.join(command) + "\n"
        return [_write(options["wrapper"], script, 0o750), page]

    update = install


class Promise:
    """`etc/promise/<name>`: exits 0 if and only if the URL answers."""

    def __init__(self, buildout, name, options):
        self.options = options
        options.setdefault("python", sys.executable)

    def install(self):
        options = self.options
        command = [options["python"], "-I", "-c", PROMISE_CODE, options["url"]]
        script = "#!/bin/sh\nexec " + shlex.join(command) + "\n"
        return [_write(options["path"], script, 0o750)]

    update = install


class Publish:
    """Publish every option of the section (but `recipe`) as a connection parameter."""

    def __init__(self, buildout, name, options):
        self.name = name
        self.options = options
        self.master = _master(buildout)

    def install(self):
        connection = {
            key: value
            for key, value in self.options.items()
            if key != "recipe" and not key.startswith("_")
        }
        try:
            self.master.publish(connection)
        except SlapCallError as exc:
            raise zc.buildout.UserError(f"[{self.name}] {exc}") from None
        return ()

    update = install
