"""What a periodic check of an up-to-date partition means for its health, across runs.

* `ServiceStarts`: when each partition's services last (re)started, read from supervisord
  once per run; a promise result from before that no longer describes running services.
* `count_check`: the consecutive failed checks kept in the state store, which the planner
  turns into a redeployment after `promise_failures_before_redeploy` of them.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping

from slapgrid.errors import SlapgridError
from slapgrid.node.process_states import ProcessState, running_since
from slapgrid.node.promises.results import PromiseReport
from slapgrid.node.state import StateStore
from slapgrid.node.supervisor.control import Supervisor

log = logging.getLogger(__name__)


class ServiceStarts:
    """One `getAllProcessInfo` per run: the one the plan read, else read at the first check
    that needs it."""

    def __init__(
        self,
        supervisor: Supervisor,
        processes: Mapping[str, tuple[ProcessState, ...]] | None = None,
    ) -> None:
        self.supervisor = supervisor
        self._lock = threading.Lock()
        self._since: dict[str, float] | None = None
        if processes is not None:
            self._since = {group: running_since(states) for group, states in processes.items()}

    def since(self, pid: str) -> float:
        """When `pid`'s services last (re)started; `math.inf` when one is down, so no
        cached result stands for them."""
        with self._lock:
            if self._since is None:
                try:
                    self._since = self.supervisor.running_since()
                except SlapgridError as exc:
                    log.warning("cannot read the services' states: %s", exc)
                    self._since = {}
            since = self._since.get(pid)
        if since is not None:
            return since
        # unknown to supervisord: down if the partition has programs, else none to restart
        return math.inf if self.supervisor.partition_conf(pid).exists() else 0.0


def count_check(store: StateStore, pid: str, report: PromiseReport, redeploy_after: int) -> None:
    """A passing check resets the count; a failing one adds one, and says how far it is
    from the redeployment that heals the partition."""
    extra = {"partition": pid, "action": "check"}
    if not report.failed:
        store.clear_failed_checks(pid)
        log.info("%s up to date, promises ok", pid, extra=extra)
        return
    message = report.error_message or "a promise failed"
    checks = store.record_failed_check(pid, report.failures[0].title, message)
    heal = f" of {redeploy_after} before a redeployment" if redeploy_after else ""
    log.error(
        "%s up to date, promises failing (%d checks in a row%s): %s",
        pid,
        checks.count,
        heal,
        message,
        extra=extra,
    )
