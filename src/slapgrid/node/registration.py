"""`slapgrid register`: a new node's key, made here, and its certificate, from the master.

The node makes its key and sends only a certificate request (the key never crosses the
network), trades its one-time token for the certificate, checks that the certificate is
for its key, then writes `key.pem` (0600), `cert.pem` and `ca.pem`. Nothing is written
when the master refuses, and existing files are never replaced.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from slapgrid.errors import SlapgridError
from slapgrid.node.files import atomic_write
from slapgrid.slap.registration import request_certificate

KEY_FILE, CERT_FILE, CA_FILE = "key.pem", "cert.pem", "ca.pem"
DEFAULT_OUT = Path("/etc/opt/slapos/ssl")


def register(
    master_url: str,
    token: str,
    computer_id: str,
    out: Path,
    *,
    ca_file: Path | None = None,
    timeout: float = 60.0,
) -> tuple[Path, Path, Path]:
    """Register `computer_id` and write its credentials in `out`: (key, cert, ca) paths."""
    out = Path(out).expanduser().resolve()
    paths = out / KEY_FILE, out / CERT_FILE, out / CA_FILE
    for path in paths:
        if path.exists():
            raise SlapgridError(f"{path} exists: not replaced (choose another --out)")
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, computer_id)]))
        .sign(key, hashes.SHA256())
    )
    pem = request.public_bytes(serialization.Encoding.PEM).decode()
    certificate, ca = request_certificate(
        master_url, token, computer_id, pem, ca_file=ca_file, timeout=timeout
    )
    try:
        issued = x509.load_pem_x509_certificate(certificate.encode())
        x509.load_pem_x509_certificate(ca.encode())
    except ValueError:
        raise SlapgridError("the master's answer holds no valid certificate") from None
    if issued.public_key().public_numbers() != key.public_key().public_numbers():
        raise SlapgridError("the master's certificate is not for this node's key")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(paths[0], key_pem, 0o600)
        atomic_write(paths[1], certificate, 0o644)
        atomic_write(paths[2], ca, 0o644)
    except OSError as exc:
        raise SlapgridError(
            f"cannot write the credentials in {out}: {exc.strerror or exc}"
        ) from None
    return paths


def config_lines(master_url: str, computer_id: str, paths: tuple[Path, Path, Path]) -> str:
    """The `[slapos]` lines of slapos.cfg that use the files."""
    key, cert, ca = paths
    return (
        f"[slapos]\nmaster_url = {master_url}\ncomputer_id = {computer_id}\n"
        f"key_file = {key}\ncert_file = {cert}\nmaster_ca_file = {ca}\n"
    )
