"""One run of a lane thread: the one-shot command's own function, its end made a `Finished`.

Every way a run can end becomes a `Result` here, so no exception reaches the lane thread
and the schedule always learns that the lane is free again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from slapgrid.errors import LockedError, SlapgridError
from slapgrid.exit_status import ExitStatus
from slapgrid.node.config import NodeConfig
from slapgrid.node.daemon.schedule import Finished, Job, Result, Start, retry_times
from slapgrid.node.instance.run import run_instance
from slapgrid.node.report.run import ReportError, run_report
from slapgrid.node.run_result import RunResult
from slapgrid.node.software.run import run_software
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import SlapError

log = logging.getLogger(__name__)


def run_job(
    start: Start,
    config: NodeConfig,
    connect: Callable[[NodeConfig], SlapClient],
    cancel: threading.Event,
) -> Finished:
    began = time.monotonic()
    detail, run = "", RunResult(ExitStatus.FAILED)
    try:
        with connect(config) as client:
            if start.job == Job.SOFTWARE:
                run = run_software(config, client, cancel=cancel)
            elif start.job == Job.INSTANCE:
                run = run_instance(config, client, only=start.only, cancel=cancel)
            else:
                run = run_report(config, client)
        result = Result.of(run)
    except LockedError as exc:
        result, detail = Result.LOCKED, str(exc)
    except (SlapError, ReportError) as exc:
        result, detail = Result.MASTER_ERROR, str(exc)
    except SlapgridError as exc:
        result, detail = Result.ERROR, str(exc)
    except Exception as exc:  # a bug must not end the agent: log it, go on
        log.exception("%s failed unexpectedly", start.describe())
        result, detail = Result.ERROR, f"{type(exc).__name__}: {exc}"
    return Finished(
        start,
        result,
        time.monotonic() - began,
        detail,
        built=run.built,
        retry_at=retry_times(run.failures),
    )
