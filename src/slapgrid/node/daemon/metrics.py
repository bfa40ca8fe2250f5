"""Prometheus metrics of `slapgrid node`, served on 127.0.0.1 only when a port is set.

A registry of its own (not the library's global one) so that nothing else in the process
leaks into the exposition, plus the standard process metrics (resident memory, open file
descriptors) that show whether the long-running agent stays flat.
"""

from __future__ import annotations

from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)

from slapgrid.errors import SlapgridError

ADDRESS = "127.0.0.1"
DURATION_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)
REACTION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.runs = Counter(
            "slapgrid_node_runs",
            "Software, instance and report runs, by job and result.",
            ["job", "result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "slapgrid_node_run_duration_seconds",
            "Duration of runs, by job.",
            ["job"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.reaction = Histogram(
            "slapgrid_node_reaction_seconds",
            "From seeing a changed partition in the master's document to starting its run.",
            buckets=REACTION_BUCKETS,
            registry=self.registry,
        )
        self.changes = Counter(
            "slapgrid_node_changes",
            "Partitions and software lists seen changed at the master.",
            ["kind"],
            registry=self.registry,
        )
        self.master_errors = Counter(
            "slapgrid_node_master_errors",
            "Runs and watches that could not reach the master.",
            registry=self.registry,
        )
        self.partitions = Gauge(
            "slapgrid_node_partitions",
            "Partitions by requested state (free ones as 'free'), as the master last said.",
            ["state"],
            registry=self.registry,
        )
        self.last_run = Gauge(
            "slapgrid_node_last_run_timestamp_seconds",
            "When each job last finished (Unix time).",
            ["job"],
            registry=self.registry,
        )
        self._server: WSGIServer | None = None

    def run_finished(self, job: str, result: str, duration: float, finished: float) -> None:
        self.runs.labels(job, result).inc()
        self.duration.labels(job).observe(duration)
        self.last_run.labels(job).set(finished)

    def partition_states(self, counts: Mapping[str, int]) -> None:
        for state in ("started", "stopped", "destroyed", "free"):
            self.partitions.labels(state).set(counts.get(state, 0))

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def serve(self, port: int) -> None:
        try:
            self._server, _thread = start_http_server(port, addr=ADDRESS, registry=self.registry)
        except OSError as exc:
            raise SlapgridError(
                f"cannot serve metrics on {ADDRESS}:{port}: {exc.strerror or exc}"
            ) from None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
