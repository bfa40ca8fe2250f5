"""Errors a user can cause. The CLI turns each into one line on stderr and an exit code."""

from slapgrid.exit_status import ExitStatus


class SlapgridError(Exception):
    """Base of every error slapgrid reports to its user without a traceback."""

    exit_code = ExitStatus.FAILED


class ConfigError(SlapgridError):
    """The configuration (file, flags or environment) is unusable; names the option."""

    exit_code = ExitStatus.USAGE


class LockedError(SlapgridError):
    """Another run holds the lock for the same work."""

    exit_code = ExitStatus.LOCKED
