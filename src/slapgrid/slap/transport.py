"""HTTP for the SLAP protocol: URL joining, TLS, timeouts, size bounds, status → errors.

GET carries its parameters in the query string, POST in a form body, both to
`<master_url>/<method>`. Unlike the reference, the master's certificate is verified when
`ca_file` is given, and a connection that never got through is retried with back-off
(nothing was sent, so this is always safe).

`timeout` bounds the whole exchange, not only each read (see `deadline`). Redirects are
refused, never followed: a POST must reach the configured master and no other server.
"""

from __future__ import annotations

import json
import ssl
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urljoin

from slapgrid import __version__
from slapgrid.slap.errors import (
    SERVER_ERROR_STATUSES,
    ConnectionError,
    HTTPStatusError,
    NotFoundError,
    ProtocolError,
    ResourceNotReady,
    ServerError,
    SlapError,
)
from slapgrid.slap.urls import normalise_master_url

# httpx imports its own command line (click, rich, pygments) with the library, and falls
# back quietly when that fails: blocking it saves every cron run of ours about 0.1 s of
# start-up, for a module we never use.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402

from slapgrid.slap.deadline import Deadline, DeadlineTransport  # noqa: E402

MAX_RESPONSE_BYTES = 64 << 20
CONNECT_RETRIES = 2
CONNECT_BACKOFF = 0.5


def _error_for(status: int, url: str, body: bytes, location: str | None) -> SlapError:
    if status < 400:
        target = f" to {location}" if location else ""
        return HTTPStatusError(status, f"{status} from {url}: redirect{target} refused")
    detail = body[:200].decode("utf-8", "replace").strip().splitlines()
    message = f"{status} from {url}" + (f": {detail[0]}" if detail else "")
    if status == 404:
        return NotFoundError(status, message)
    if status == 408:
        return ResourceNotReady(status, message)
    if status in SERVER_ERROR_STATUSES:
        return ServerError(status, message)
    return HTTPStatusError(status, message)


def _tls_context(
    ca_file: Path | str | None, key_file: Path | str | None, cert_file: Path | str | None
) -> ssl.SSLContext:
    """Verify the master against `ca_file` when given, else not at all (like the reference)."""
    if ca_file:
        context = ssl.create_default_context(cafile=str(ca_file))
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        try:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise SlapError(f"cannot load client certificate {cert_file}: {exc}") from None
    return context


class Transport:
    """One HTTP connection pool to one master, with the node's (or partition's) identity."""

    def __init__(
        self,
        master_url: str,
        *,
        key_file: Path | str | None = None,
        cert_file: Path | str | None = None,
        ca_file: Path | str | None = None,
        timeout: float = 60.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = normalise_master_url(master_url)
        self.max_response_bytes = max_response_bytes
        self.timeout = timeout
        self._deadline = Deadline()
        https = self.base_url.startswith("https:")
        context = (
            _tls_context(ca_file, key_file, cert_file) if https else ssl.create_default_context()
        )
        self._client = httpx.Client(
            transport=DeadlineTransport(context, self._deadline),
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": f"slapgrid/{__version__}", "Accept": "*/*"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def url(self, method: str) -> str:
        return urljoin(self.base_url, method.lstrip("/"))

    def get(self, method: str, params: Mapping[str, str | None] | None = None) -> bytes:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return self._send("GET", method, params=query)

    def post(
        self,
        method: str,
        data: Mapping[str, str | None],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        # the reference sends None as the literal "None", and masters expect it
        form = {k: "None" if v is None else str(v) for k, v in data.items()}
        return self._send("POST", method, data=form, headers=headers)

    def post_json(self, method: str, document: Mapping[str, object]) -> object:
        """A JSON call (the jIO API); its answer decoded, or `ProtocolError`."""
        body = self._send("POST", method, json=dict(document))
        try:
            return json.loads(body)
        except ValueError:
            raise ProtocolError(f"answer of {self.url(method)} is not JSON") from None

    def _send(self, verb: str, method: str, **kwargs: object) -> bytes:
        url = self.url(method)
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                with self._deadline.within(self.timeout):
                    return self._receive(url, self._client.build_request(verb, url, **kwargs))
            except httpx.ConnectError as exc:
                if attempt == CONNECT_RETRIES:
                    raise ConnectionError(f"cannot connect to {url}: {exc}") from None
                time.sleep(CONNECT_BACKOFF * 2**attempt)
            except httpx.TimeoutException:
                raise ConnectionError(
                    f"no whole answer from {url} within {self.timeout:g} s"
                ) from None
            except httpx.HTTPError as exc:
                raise ConnectionError(f"cannot talk to {url}: {exc}") from None
        raise AssertionError("unreachable")

    def _receive(self, url: str, request: httpx.Request) -> bytes:
        response = self._client.send(request, stream=True)
        try:
            too_big = ProtocolError(f"answer of {url} exceeds {self.max_response_bytes} bytes")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_response_bytes:
                raise too_big
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise too_big
                chunks.append(chunk)
        finally:
            response.close()
        body = b"".join(chunks)
        if response.status_code >= 300:
            location = response.headers.get("location")
            raise _error_for(response.status_code, url, body, location)
        return body
