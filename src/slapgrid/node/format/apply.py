"""Applying the steps of a format plan, in order, or listing what they would change."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from slapgrid.node.format.steps import FormatError, Step

log = logging.getLogger(__name__)


def execute(steps: Sequence[Step], *, dry_run: bool = False) -> list[str]:
    """Apply every step in order; returns the changes made (or that would be made)."""
    changes = []
    for step in steps:
        try:
            done = step.apply(dry_run)
        except OSError as exc:
            raise FormatError(f"{exc.filename or step}: {exc.strerror or exc}") from None
        for change in done:
            if not dry_run:
                log.info("format: %s", change)
        changes += done
    return changes
