"""The statuses a run or command ends with; only the command line turns them into exit codes.

The numbers are the reference's and cron scripts test them, so they never change.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0
    FAILED = 1  # some item failed; it has its own back-off
    PROMISE_FAILED = 2  # deployed, but a promise fails
    USAGE = 2  # a configuration or command-line mistake (click's number for usage errors)
    OFFLINE = 3  # master unreachable or 5xx; instance still starts the known services
    LOCKED = 10  # another run holds the lock
    SUPERVISORCTL = 20  # + supervisorctl's own status 1-9 (LSB: 23 a program is not running)
    INTERNAL_ERROR = 70  # a bug of ours (sysexits' EX_SOFTWARE)
    INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
