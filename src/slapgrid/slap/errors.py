"""Failures of a SLAP exchange, typed after the status codes masters answer with."""

from slapgrid.errors import SlapgridError
from slapgrid.exit_status import ExitStatus


class SlapError(SlapgridError):
    """Any failure while talking to a SLAP master."""


class ProtocolError(SlapError):
    """The peer sent something that is not a valid SLAP document."""


class ConnectionError(SlapError):
    """The master could not be reached (refused, DNS, TLS, timeout)."""

    exit_code = ExitStatus.OFFLINE


class HTTPStatusError(SlapError):
    """The master answered with an error status not covered by a subclass."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(HTTPStatusError):
    """404: unknown computer, partition or software release, or endpoint not implemented."""


class ResourceNotReady(HTTPStatusError):
    """408: the requested instance is not allocated yet; ask again later."""


class ServerError(HTTPStatusError):
    """5xx the reference treats as transient (500, 502, 503, 520, 523, 524, 526)."""

    exit_code = ExitStatus.OFFLINE  # the master is down for now, as good as unreachable


SERVER_ERROR_STATUSES = frozenset({500, 502, 503, 520, 523, 524, 526})
