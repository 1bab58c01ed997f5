"""The fleet as the database sees it: jobs by status and the queue, items by status, workers and their
heartbeats, schedules. Read at scrape time (app/ops/fleet.py) and by `GET /v1/workers`, so every instance
reports the same figures.

The ops room reads other rooms' tables here, and only reads them: a scrape is a handful of grouped queries,
where going through each room's service would cost a round trip per room and per dataset. Times are the
database's (`utc_now`), like the heartbeats and leases they are compared with.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, func, literal, or_, select, union_all
from sqlalchemy.orm import Session

from app.core.db import utc_now
from app.datasets.models import Dataset
from app.finetune.models import FineTuneJob
from app.generation.models import GenerationJob, ItemCount, ItemStatus
from app.jobs.models import JobStatus, LeasedJob, WorkerProcess
from app.jobs.workers import FORGET_AFTER
from app.schedules.models import Schedule

# A worker whose heartbeat is older than this many intervals is stale (killed, hung, its machine gone).
STALE_AFTER_HEARTBEATS = 3

# The kinds of job, as metrics label them (the same names as sprout_jobs_claimed's).
JOB_KINDS: dict[str, type[LeasedJob]] = {"generation": GenerationJob, "fine_tune": FineTuneJob}


class WorkerState(enum.StrEnum):
    alive = "alive"  # heartbeat within STALE_AFTER_HEARTBEATS intervals
    stale = "stale"  # no heartbeat for longer, and never said it stopped: presumed dead
    stopped = "stopped"  # stopped cleanly (SIGTERM, the service's shutdown)


class ScheduleState(enum.StrEnum):
    enabled = "enabled"  # the schedules API calls it "active"
    paused = "paused"
    ended = "ended"  # stopped by itself (target size reached, runs used up)


def worker_state(
    heartbeat_at: datetime, stopped_at: datetime | None, now: datetime, heartbeat_seconds: float
) -> WorkerState:
    if stopped_at is not None:
        return WorkerState.stopped
    if now - heartbeat_at <= timedelta(seconds=STALE_AFTER_HEARTBEATS * heartbeat_seconds):
        return WorkerState.alive
    return WorkerState.stale


def seconds_between(earlier: datetime, later: datetime) -> float:
    """Never negative: two statements' clocks may differ by a hair."""
    return max(0.0, (later - earlier).total_seconds())


def database_now(session: Session) -> datetime:
    now = session.scalar(select(utc_now()))
    assert now is not None
    return now


# --- jobs and the queue ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFigures:
    """One kind of job: how many in each status; how many queued jobs could be claimed now (not waiting out a
    retry backoff) and how long the oldest of them has waited (since it was queued or its backoff ended)."""

    kind: str
    by_status: dict[str, int]
    ready: int
    oldest_seconds: float


def _job_groups(model: type[LeasedJob], kind: str):  # noqa: ANN202 (a Select)
    ready = and_(
        model.status == JobStatus.queued, or_(model.not_before.is_(None), model.not_before <= utc_now())
    )
    waiting_since = case((model.not_before > model.created_at, model.not_before), else_=model.created_at)
    return select(
        literal(kind).label("kind"),
        model.status,
        func.count().label("n"),
        func.sum(case((ready, 1), else_=0)).label("ready"),
        func.min(case((ready, waiting_since))).label("oldest"),
    ).group_by(model.status)


def queue_figures(session: Session, now: datetime) -> list[QueueFigures]:
    """Every kind of job, every status (zeros included): one grouped query over both job tables."""
    query = union_all(*(_job_groups(model, kind) for kind, model in JOB_KINDS.items()))
    by_status = {kind: {s.value: 0 for s in JobStatus} for kind in JOB_KINDS}
    ready = dict.fromkeys(JOB_KINDS, 0)
    oldest: dict[str, datetime] = {}
    for kind, status, n, ready_n, first in session.execute(query):
        by_status[kind][JobStatus(status).value] = int(n)
        ready[kind] += int(ready_n or 0)
        if first is not None:
            oldest[kind] = _as_datetime(first)
    return [
        QueueFigures(
            kind=kind,
            by_status=by_status[kind],
            ready=ready[kind],
            oldest_seconds=seconds_between(oldest[kind], now) if kind in oldest else 0.0,
        )
        for kind in JOB_KINDS
    ]


def _as_datetime(value: object) -> datetime:
    """A UNION's columns come back with the first SELECT's types; SQLite may still hand over its text."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


# --- items -------------------------------------------------------------------------------------------------------


def item_figures(session: Session) -> dict[str, dict[str, int]]:
    """Items by status per dataset (by name), every status and every dataset (zeros included), from the
    trigger-kept `item_count` table summed over its shards."""
    counts: dict[str, dict[str, int]] = {}
    query = (
        select(Dataset.name, ItemCount.status, func.sum(ItemCount.n))
        .outerjoin(ItemCount, ItemCount.dataset_id == Dataset.id)
        .group_by(Dataset.name, ItemCount.status)
    )
    for name, status, n in session.execute(query):
        row = counts.setdefault(name, {s.value: 0 for s in ItemStatus})
        if status is not None:
            row[status] = int(n or 0)  # PostgreSQL sums bigints as numeric
    return counts


# --- workers -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerView:
    id: str
    kind: str
    hostname: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    running: int
    claimed: int
    state: WorkerState
    heartbeat_age_seconds: float


def worker_views(
    session: Session, now: datetime, heartbeat_seconds: float, *, states: Sequence[WorkerState] | None = None
) -> list[WorkerView]:
    """The registered workers (the newest first) with their state and heartbeat age, in database time."""
    views = []
    for row in session.scalars(
        select(WorkerProcess).order_by(WorkerProcess.started_at.desc(), WorkerProcess.id)
    ):
        state = worker_state(row.heartbeat_at, row.stopped_at, now, heartbeat_seconds)
        if states is not None and state not in states:
            continue
        views.append(
            WorkerView(
                id=row.id,
                kind=row.kind,
                hostname=row.hostname,
                pid=row.pid,
                version=row.version,
                started_at=row.started_at,
                heartbeat_at=row.heartbeat_at,
                stopped_at=row.stopped_at,
                running=row.running,
                claimed=row.claimed,
                state=state,
                heartbeat_age_seconds=seconds_between(row.heartbeat_at, now),
            )
        )
    return views


def reports_heartbeat(view: WorkerView) -> bool:
    """Whether a worker's heartbeat age is worth a series: live and stale ones, until the registry forgets
    them (a day); a worker that stopped cleanly has nothing to say."""
    return (
        view.state is not WorkerState.stopped and view.heartbeat_age_seconds <= FORGET_AFTER.total_seconds()
    )


# --- schedules ---------------------------------------------------------------------------------------------------


def schedule_figures(session: Session) -> dict[str, int]:
    counts = {s.value: 0 for s in ScheduleState}
    # As the schedules room tells them apart (app/schedules/schemas.state_of): ending one also disables it.
    state = case(
        (Schedule.enabled.is_(True), ScheduleState.enabled.value),
        (Schedule.ended_reason.is_not(None), ScheduleState.ended.value),
        else_=ScheduleState.paused.value,
    )
    for name, n in session.execute(select(state, func.count()).group_by(state)):
        counts[name] = int(n)
    return counts
