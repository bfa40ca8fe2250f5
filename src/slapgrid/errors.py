"""Errors a user can cause. The CLI turns each into one line on stderr and an exit code."""

from slapgrid.exit_status import ExitStatus


def first_line(exc: BaseException) -> str:
    """What went wrong, in one line: the message's first line, else the exception's kind
    (a driver's error may span lines, or say nothing)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class SlapgridError(Exception):
    """Base of every error slapgrid reports to its user without a traceback."""

    exit_code = ExitStatus.FAILED


class ConfigError(SlapgridError):
    """The configuration (file, flags or environment) is unusable; names the option."""

    exit_code = ExitStatus.USAGE


class LockedError(SlapgridError):
    """Another run holds the lock for the same work."""

    exit_code = ExitStatus.LOCKED
