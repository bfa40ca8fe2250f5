"""The registration call: a one-time token traded for a computer's certificate.

It is the call the reference's `slapos node register` makes (`Person_requestComputer`, the
token in `X-Access-Token`, the computer's name as `title`, a JSON answer), with one field
added: `certificate_request`, a CSR, so the key never leaves the node. Without it the
master makes the key and sends it, as the reference's master does.
"""

from __future__ import annotations

import json
from pathlib import Path

from slapgrid.slap.errors import HTTPStatusError, ProtocolError, SlapError
from slapgrid.slap.transport import Transport

REGISTER_PATH = "Person_requestComputer"
TOKEN_HEADER = "X-Access-Token"


class RegistrationRefused(SlapError):
    """The master refused the token: unknown, already used, expired or for another computer."""


def request_certificate(
    master_url: str,
    token: str,
    computer_id: str,
    request_pem: str,
    *,
    ca_file: Path | None = None,
    timeout: float = 60.0,
) -> tuple[str, str]:
    """(certificate, CA certificate), both PEM, for the key of the CSR `request_pem`."""
    transport = Transport(master_url, ca_file=ca_file, timeout=timeout)
    try:
        body = transport.post(
            REGISTER_PATH,
            {"title": computer_id, "certificate_request": request_pem},
            headers={TOKEN_HEADER: token},
        )
    except HTTPStatusError as exc:
        if exc.status == 403:
            raise RegistrationRefused(
                "the master refused the token (unknown, used, expired or for another "
                "computer): ask its administrator for a new one"
            ) from None
        raise
    finally:
        transport.close()
    try:
        answer = json.loads(body)
    except ValueError:
        raise ProtocolError("the registration answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ProtocolError("the registration answer is not a JSON object")
    certificate, ca = answer.get("certificate"), answer.get("ca")
    if not isinstance(certificate, str) or not isinstance(ca, str) or not certificate:
        raise ProtocolError("the registration answer has no certificate and CA")
    return certificate, ca
