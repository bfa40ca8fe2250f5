"""The key that signs binary cache entries, and the certificate nodes trust it by.

slapos.libnetworkcache signs a shadir entry with an RSA key (`signature-private-key-file`)
and a node trusts an entry only if one of the PEM certificates in its
`signature-certificate-list` verifies it; the certificate's own issuer is never checked,
so a self-signed one is what the reference's operators make (`openssl req -x509`).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from slapgrid.master.pki import files
from slapgrid.master.pki.files import KEY_MODE, PUBLIC_MODE, CredentialError

KEY_FILE = "signature.key"
CERT_FILE = "signature.crt"
KEY_SIZE = 2048
YEARS = 10


def signing_pair(name: str, now: datetime.datetime) -> tuple[bytes, bytes]:
    """A new RSA key (PEM, unencrypted: nodes read it unattended) and its certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365 * YEARS))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def write_signing_key(out: Path, name: str) -> tuple[Path, Path]:
    """`out/signature.key` (0600) and `out/signature.crt`; refused if either exists."""
    out = files.make_private_dir(Path(out).expanduser().resolve())
    key_path, cert_path = out / KEY_FILE, out / CERT_FILE
    for path in (key_path, cert_path):
        if path.exists():
            raise CredentialError(f"{path} exists: not replaced (choose another --out)")
    key, certificate = signing_pair(name, datetime.datetime.now(datetime.UTC))
    for path, data, mode in ((key_path, key, KEY_MODE), (cert_path, certificate, PUBLIC_MODE)):
        if not files.create_exclusive(path, data, mode):
            raise CredentialError(f"{path} exists: not replaced (choose another --out)")
    return key_path, cert_path


def networkcache_lines(key_path: Path | None, cert_path: Path) -> str:
    """The `[networkcache]` lines that sign with the key (if given) and trust the certificate."""
    certificate = cert_path.read_text(encoding="ascii").strip()
    lines = ["[networkcache]"]
    if key_path is not None:
        lines.append(f"signature-private-key-file = {key_path}")
    lines.append("signature-certificate-list =")
    lines += [f"  {line}" for line in certificate.splitlines()]
    return "\n".join(lines) + "\n"
