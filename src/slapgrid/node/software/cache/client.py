"""Our networkcache client: shacache (files by SHA-512) and shadir (signed entries by key).

It speaks slapos.libnetworkcache's protocol and formats, so that what either uploads the
other finds, trusts and downloads:

- `GET <dir>/<key>`: a JSON list of `[entry, signature]`; `entry` is the JSON text of an
  object holding at least `sha512`; `signature` is the base64 of the signer's RSA PKCS#1
  v1.5 (or ECDSA) signature of the entry's UTF-8 bytes with SHA-1, or "" when unsigned.
  An entry is trusted when one certificate of `signature-certificate-list` verifies it.
- `GET <cache>/<sha512>`: the file, checked against its SHA-512 while streamed to disk.
- Upload: `GET <cache>/<sha512>` (present: not sent again), else `POST <cache>` with the
  file (201, the SHA-512 as body); then `PUT <dir>/<key>` with `[entry, signature]` (201).

Why not slapos.libnetworkcache itself: its `-nspkg.pth` makes `slapos` a namespace package
in every process of the agent's interpreter, including the pip zc.buildout runs, and the
slapos.core sdist then fails to build (`No module named 'slapos.version'`). See
docs/networkcache.md.

TLS client files (`*-cert-file`, `*-key-file`) and CAs (`*-ca-file`) are used for every
request to an https URL, downloads included: the master's cache wants a certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

log = logging.getLogger(__name__)

CHUNK = 1 << 16
CONNECT_TIMEOUT = 60.0
"""Seconds to connect, and between two reads of an answer."""
UPLOAD_TIMEOUT = 3600.0
"""Seconds the server may take to answer an upload (it digests the whole file first)."""


class CacheError(Exception):
    """Any failure talking to the cache."""


class StatusError(CacheError):
    """The server answered with an unexpected HTTP status."""

    def __init__(self, url: str, status: int, detail: str = "") -> None:
        super().__init__(f"HTTP {status}" + (f": {detail}" if detail else "") + f" ({url})")
        self.url, self.status = url, status


class Unreachable(CacheError):
    """No answer: connection refused, TLS handshake failed, timeout, connection dropped."""


class Malformed(CacheError):
    """An answer that is not what the protocol says (shadir's JSON, an upload's digest)."""


class ChecksumMismatch(CacheError):
    """A downloaded file whose SHA-512 is not the one asked for (tampered or truncated)."""


@dataclass(frozen=True)
class Endpoint:
    """shacache or shadir: its URL and the TLS files used when it is https."""

    url: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def join(self, name: str = "") -> str:
        return self.url.rstrip("/") + (f"/{name}" if name else "")

    def verify(self) -> ssl.SSLContext | bool:
        if not self.url.startswith("https:"):
            return True
        context = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file or None)
        return context


# --- signatures ---------------------------------------------------------------------------

PublicKey = Any  # rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def load_certificates(pems: Sequence[str]) -> list[x509.Certificate]:
    """The certificates that parse; a bad one is logged and skipped, as the reference does."""
    loaded = []
    for pem in pems:
        try:
            loaded.append(x509.load_pem_x509_certificate(pem.encode()))
        except ValueError as exc:
            log.info("ignored a signature certificate that does not parse: %s", exc)
    return loaded


def _public_der(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(private_key: Any, text: str) -> str:
    """The base64 signature of `text`'s UTF-8 bytes, SHA-1, as shadir entries carry it."""
    data = text.encode()
    if isinstance(private_key, rsa.RSAPrivateKey):
        raw = private_key.sign(data, padding.PKCS1v15(), hashes.SHA1())
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        raw = private_key.sign(data, ec.ECDSA(hashes.SHA1()))
    else:
        raise CacheError(f"unsupported signature key type {type(private_key).__name__}")
    return base64.b64encode(raw).decode()


def verified(certificates: Sequence[x509.Certificate], text: str, signature: str) -> bool:
    """Whether one of `certificates` signed `text` (an empty signature: never)."""
    if not signature:
        return False
    try:
        raw = base64.b64decode(signature.encode(), validate=False)
        data = text.encode()
    except (binascii.Error, ValueError, AttributeError, UnicodeError):
        return False
    for certificate in certificates:
        key = certificate.public_key()
        try:
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(raw, data, padding.PKCS1v15(), hashes.SHA1())
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(raw, data, ec.ECDSA(hashes.SHA1()))
            else:
                continue
            return True
        except (InvalidSignature, UnsupportedAlgorithm, ValueError):
            continue
    return False


# --- the client ---------------------------------------------------------------------------


class NetworkCache:
    """One shacache and one shadir, for downloads or uploads."""

    def __init__(
        self,
        cache: Endpoint,
        directory: Endpoint,
        *,
        certificates: Sequence[str] = (),
        private_key_file: str | None = None,
        timeout: float = CONNECT_TIMEOUT,
        upload_timeout: float = UPLOAD_TIMEOUT,
    ) -> None:
        self.cache, self.directory = cache, directory
        self.certificates = load_certificates(certificates)
        self.timeout, self.upload_timeout = timeout, upload_timeout
        self.private_key: Any = None
        if private_key_file:
            self.private_key = serialization.load_pem_private_key(
                Path(private_key_file).read_bytes(), password=None
            )
            # as the reference: an entry no trusted certificate verifies would never be
            # downloaded, and uploaded again at every build
            mine = _public_der(self.private_key.public_key())
            if not any(_public_der(c.public_key()) == mine for c in self.certificates):
                raise CacheError(
                    "no certificate in signature-certificate-list matches"
                    " signature-private-key-file"
                )

    def _client(self, endpoint: Endpoint, timeout: float) -> httpx.Client:
        try:
            verify = endpoint.verify()
        except (OSError, ssl.SSLError) as exc:
            raise CacheError(f"TLS files of {endpoint.url}: {exc}") from exc
        return httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=self.timeout),
            follow_redirects=False,
            trust_env=False,
        )

    # --- downloads

    def entries(self, key: str) -> list[tuple[str, str]]:
        """shadir's `[entry, signature]` pairs under `key`, unfiltered (404: StatusError)."""
        url = self.directory.join(key)
        try:
            with self._client(self.directory, self.timeout) as client:
                response = client.get(url)
        except httpx.TransportError as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from exc
        if response.status_code != 200:
            raise StatusError(url, response.status_code)
        try:
            answer = json.loads(response.content.decode())
            pairs = [(str(text), str(signature or "")) for text, signature in answer]
        except (ValueError, TypeError, UnicodeError) as exc:
            raise Malformed(f"shadir answer for {key}: {exc}") from exc
        return pairs

    def trusted(self, text: str, signature: str) -> bool:
        return verified(self.certificates, text, signature)

    def select(self, key: str) -> Iterator[dict[str, Any]]:
        """The entries under `key` a trusted certificate signed, parsed, with a `sha512`."""
        for text, signature in self.entries(key):
            if not self.trusted(text, signature):
                continue
            try:
                entry = json.loads(text)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("sha512"), str):
                yield entry

    def download(self, sha512: str, out: BinaryIO) -> None:
        """Stream the file `sha512` into `out`; ChecksumMismatch unless it is that file."""
        url = self.cache.join(sha512)
        digest = hashlib.sha512()
        try:
            with (
                self._client(self.cache, self.timeout) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise StatusError(url, response.status_code)
                try:
                    for chunk in response.iter_raw(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                except httpx.RemoteProtocolError as exc:  # fewer bytes than announced
                    raise ChecksumMismatch(f"{sha512[:16]}…: incomplete ({exc})") from exc
        except httpx.TransportError as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from exc
        if digest.hexdigest() != sha512:
            raise ChecksumMismatch(f"{sha512[:16]}…: got {digest.hexdigest()[:16]}…")

    # --- uploads

    def upload(self, path: Path, key: str | None = None, metadata: Mapping[str, Any] = {}) -> str:
        """Put the file in shacache (unless there) and, with `key`, a signed entry naming it
        in shadir (`sha512` then `metadata`); its SHA-512."""
        digest = hashlib.sha512()
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        sha512 = digest.hexdigest()
        try:
            with self._client(self.cache, self.upload_timeout) as client:
                with client.stream("GET", self.cache.join(sha512)) as present:
                    there = present.status_code == 200  # its body is not read
                if not there:
                    self._post(client, path, sha512)
            if key is not None:
                self.index(key, {"sha512": sha512, **metadata})
        except httpx.TransportError as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from exc
        return sha512

    def _post(self, client: httpx.Client, path: Path, sha512: str) -> None:
        size = path.stat().st_size

        def body() -> Iterator[bytes]:
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk

        url = self.cache.join()
        response = client.post(
            url,
            content=body(),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        if response.status_code != 201:
            raise StatusError(url, response.status_code, response.text[:200])
        if response.content.strip() != sha512.encode():
            raise Malformed(f"shacache stored {response.content[:128]!r}, not {sha512[:16]}…")

    def index(self, key: str, entry: Mapping[str, Any]) -> None:
        """`PUT <dir>/<key>` one entry, signed by the private key (unsigned without one)."""
        text = json.dumps(dict(entry))
        signature = sign(self.private_key, text) if self.private_key is not None else ""
        url = self.directory.join(key)
        with self._client(self.directory, self.upload_timeout) as client:
            response = client.put(
                url,
                content=json.dumps([text, signature]).encode(),
                headers={"Content-Type": "application/json"},
            )
        if response.status_code != 201:
            raise StatusError(url, response.status_code, response.text[:200])
