"""RSA keys and self-signed certificates for networkcache entry signatures (tests only)."""

from __future__ import annotations

import datetime
from pathlib import Path

from slapgrid.master.pki.signing import signing_pair


def signer(directory: Path, name: str) -> tuple[Path, str]:
    """A private key file (PEM) and its certificate's PEM text, as `master signing-key`
    makes them."""
    key, certificate = signing_pair(name, datetime.datetime.now(datetime.UTC))
    path = directory / f"{name}.key"
    path.write_bytes(key)
    path.chmod(0o600)
    return path, certificate.decode()
