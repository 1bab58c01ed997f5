"""Fleet-wide Prometheus figures, read from the database at scrape time: whichever instance Prometheus asks
reports the same jobs, queue, items, workers and schedules (per-process figures live in app/ops/metrics.py).

A scrape is five small grouped queries on a read session. When the database cannot be read (restarting,
unreachable), the scrape still succeeds: it serves what it read before the failure, the process's own metrics,
and `sprout_fleet_scrape_error 1`, so an alert can fire on that rather than on a failed target.

Each app gets its own registry holding one collector (`fleet_registry`); the process-wide default registry is
never touched, since tests and `sprout serve --workers N` build many apps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.ops import service

log = logging.getLogger(__name__)

Step = Callable[[Session, datetime], list[Metric]]


class FleetCollector:
    """A prometheus-client custom collector: `collect()` reads the database each time it is called."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._heartbeat_seconds = settings.worker_heartbeat_seconds
        self._steps: tuple[Step, ...] = (self._jobs, self._items, self._workers, self._schedules)

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        families: list[Metric] = []
        failed = False
        try:
            with self._sessions() as session:
                now = service.database_now(session)
                for step in self._steps:
                    families.extend(step(session, now))  # a step adds its families only once it read them all
        except Exception as exc:  # noqa: BLE001 (a scrape must not fail while the database is briefly away)
            failed = True
            log.warning("fleet metrics: could not read the database: %s: %s", type(exc).__name__, exc)
        yield from families
        yield GaugeMetricFamily(
            "sprout_fleet_scrape_error",
            "1 when this scrape could not read every fleet figure from the database (they are missing), else 0.",
            value=1 if failed else 0,
        )
        yield GaugeMetricFamily(
            "sprout_fleet_scrape_seconds",
            "Time this instance took to read the fleet figures from the database.",
            value=time.perf_counter() - started,
        )

    def _jobs(self, session: Session, now: datetime) -> list[Metric]:
        jobs = GaugeMetricFamily(
            "sprout_jobs",
            "Jobs by kind (generation, fine_tune) and status, fleet-wide.",
            labels=["kind", "status"],
        )
        depth = GaugeMetricFamily(
            "sprout_queue_depth",
            "Queued jobs a worker could claim now (not waiting out a retry backoff), by kind.",
            labels=["kind"],
        )
        oldest = GaugeMetricFamily(
            "sprout_queue_oldest_seconds",
            "How long the oldest claimable queued job has waited (since it was queued or its backoff ended), "
            "by kind; 0 when none waits.",
            labels=["kind"],
        )
        for queue in service.queue_figures(session, now):
            for status, n in queue.by_status.items():
                jobs.add_metric([queue.kind, status], n)
            depth.add_metric([queue.kind], queue.ready)
            oldest.add_metric([queue.kind], queue.oldest_seconds)
        return [jobs, depth, oldest]

    def _items(self, session: Session, _now: datetime) -> list[Metric]:
        items = GaugeMetricFamily(
            "sprout_items", "Items by dataset (its name) and status.", labels=["dataset", "status"]
        )
        for dataset, counts in sorted(service.item_figures(session).items()):
            for status, n in counts.items():
                items.add_metric([dataset, status], n)
        return [items]

    def _workers(self, session: Session, now: datetime) -> list[Metric]:
        views = service.worker_views(session, now, self._heartbeat_seconds)
        states = GaugeMetricFamily(
            "sprout_workers",
            "Registered workers by state: alive (heartbeat within 3 intervals), stale (silent for longer, "
            "presumed dead), stopped (stopped cleanly; forgotten after a day).",
            labels=["state"],
        )
        for state in service.WorkerState:
            states.add_metric([state.value], sum(1 for v in views if v.state is state))
        age = GaugeMetricFamily(
            "sprout_worker_heartbeat_age_seconds",
            "Seconds since each live or stale worker's last heartbeat, in database time.",
            labels=["worker"],
        )
        for view in views:
            if service.reports_heartbeat(view):
                age.add_metric([view.id], view.heartbeat_age_seconds)
        return [states, age]

    def _schedules(self, session: Session, _now: datetime) -> list[Metric]:
        schedules = GaugeMetricFamily(
            "sprout_schedules",
            "Schedules by state: enabled, paused, ended (stopped by themselves).",
            labels=["state"],
        )
        for state, n in service.schedule_figures(session).items():
            schedules.add_metric([state], n)
        return [schedules]


def fleet_registry(sessions: sessionmaker[Session], settings: Settings) -> CollectorRegistry:
    """A registry of its own for one app's fleet collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(sessions, settings))
    return registry
