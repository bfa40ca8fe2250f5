"""What the master benchmarks share: a raw HTTP/1.1 client, the SLAP calls nodes and users
make, percentiles and the reference's virtual environment.

The client is a bare keep-alive connection over asyncio streams: cheap per request, so a
single process can play thousands of nodes without becoming what is measured.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from slapgrid.slap import marshal

ROOT = Path(__file__).resolve().parent.parent
SOFTWARE = "https://lab.example.com/software/bench/software.cfg"
FORM = "application/x-www-form-urlencoded"


def find_reference_venv(explicit: str | None) -> Path | None:
    candidates = [Path(explicit)] if explicit else [ROOT / ".venv-ref", Path("/tmp/ref")]
    for venv in candidates:
        if (venv / "bin" / "slapos").exists():
            return venv
    return None


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile of latencies in seconds, in milliseconds (NaN under 2 values)."""
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


class Connection:
    """One HTTP/1.1 connection, opened on first use and kept alive while the server agrees.

    `local_host` picks the source address: thousands of connections spread over several
    loopback addresses do not run out of one address's ephemeral ports.
    """

    def __init__(
        self, url: str, tls: ssl.SSLContext | None = None, local_host: str | None = None
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if tls else 80)
        self.tls = tls
        self.local_addr = None if local_host is None else (local_host, 0)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: str = "",
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-cased headers, body); `headers` are extra `Name: value\\r\\n` lines.

        A kept connection the server closed meanwhile (idle past its keep-alive) is opened
        again, as an HTTP client's pool does, rather than sent a request it cannot answer."""
        if self.reader is not None and self.reader.at_eof():
            self.close()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, local_addr=self.local_addr
            )
        assert self.reader is not None
        if body:
            headers += f"Content-Type: {FORM}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{headers}\r\n".encode() + body
        )
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in head[1:] if line)
        }
        content = await self.reader.readexactly(int(fields.get("content-length", 0)))
        if fields.get("connection", "").lower() == "close" or head[0].startswith("HTTP/1.0"):
            self.close()
        return status, fields, content

    async def get(self, path: str, etag: str | None = None) -> tuple[int, str | None]:
        """(status, ETag) of a GET, `If-None-Match: etag` sent when given."""
        extra = f"If-None-Match: {etag}\r\n" if etag else ""
        status, headers, _ = await self.request("GET", path, headers=extra)
        return status, headers.get("etag")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# --- the SLAP calls ------------------------------------------------------------------------


def computer_definition(computer: str, partitions: int) -> dict[str, Any]:
    """What `slapos format` registers (loadComputerConfigurationFromXML): `partitions`
    partitions, each with an IPv4 and an IPv6 address and a tap."""
    return {
        "reference": computer,
        "address": "10.0.0.1",
        "netmask": "255.255.255.0",
        "partition_list": [
            {
                "reference": f"slappart{i}",
                "address_list": [
                    {"addr": f"10.1.{i // 250}.{i % 250 + 1}", "netmask": "255.255.0.0"},
                    {"addr": f"fd00::{i + 1:x}", "netmask": "ffff:ffff:ffff:ffff::"},
                ],
                "tap": {"name": f"slaptap{i}"},
            }
            for i in range(partitions)
        ],
    }


def request_form(reference: str, parameters: dict[str, str], computer: str) -> dict[str, str]:
    """A user's requestComputerPartition of a started instance of `SOFTWARE` on `computer`
    (SLA `computer_guid`), as `slapos request` sends it."""
    return {
        "software_release": SOFTWARE,
        "software_type": "default",
        "partition_reference": reference,
        "partition_parameter_xml": marshal.dumps(parameters).decode(),
        "filter_xml": marshal.dumps({"computer_guid": computer}).decode(),
        "state": marshal.dumps("started").decode(),
        "shared_xml": marshal.dumps(False).decode(),
    }


def encode_form(form: dict[str, str]) -> bytes:
    return urlencode(form).encode()
