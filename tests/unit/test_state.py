"""The agent's state store: consecutive failed checks survive a restart and reset on success."""

from __future__ import annotations

import json
from pathlib import Path

from slapgrid.node.planner import FailedChecks
from slapgrid.node.state import StateStore


def test_failed_checks_count_up_survive_a_restart_and_reset(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.failed_checks() == {}
    store.record_failed_check("p0", "check-web", "down")
    second = store.record_failed_check("p0", "check-db", "refused")
    assert second == FailedChecks(2, "check-db", "refused")
    assert StateStore(tmp_path).failed_checks() == {"p0": second}  # read back from disk
    store.record_failure("p0", "buildout failed")  # back-off is kept apart
    store.clear_failed_checks("p0")
    reloaded = StateStore(tmp_path)
    assert reloaded.failed_checks() == {} and "p0" in reloaded.failures()


def test_an_unreadable_entry_is_skipped(tmp_path: Path) -> None:
    (tmp_path / ".slapgrid").mkdir()
    state = {"failures": {}, "failed_checks": {"p0": {"count": 1}, "p1": {"old": True}}}
    (tmp_path / ".slapgrid" / "state.json").write_text(json.dumps(state))
    assert StateStore(tmp_path).failed_checks() == {}
