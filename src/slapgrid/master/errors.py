"""The master's refusals, each carrying the HTTP status the app answers with.

Apart from the store so that input checks, lookups and transitions raise the same errors
without importing one another.
"""

from __future__ import annotations

from slapgrid.errors import SlapgridError


class MasterError(SlapgridError):
    """A request the master refuses; `status` is the HTTP answer."""

    status = 400


class BadRequest(MasterError):
    status = 400


class NotFound(MasterError):
    status = 404


class Conflict(MasterError):
    status = 409


class TimedOut(MasterError):
    status = 408


class TooLarge(MasterError):
    status = 413


class UnsupportedMediaType(MasterError):
    status = 415


class Forbidden(MasterError):
    status = 403
