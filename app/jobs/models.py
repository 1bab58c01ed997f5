"""The columns every durable job has (a status, a lease held by one worker, an attempt number that fences, a
priority, a time before which a retried job waits), and the workers that claim them.

Generation and fine-tuning jobs share the mixin, so one queue (app/jobs/queue.py) claims, renews, fences,
retries and requeues them all; schedules (app/schedules) queue generation jobs into it.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, string_enum, utcnow


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class LeasedJob:
    """Mixin: queue state. A worker owns a running job while `lease_until` (database time) is in the future;
    `attempt` grows with every claim, so a worker that lost its lease can no longer write (its attempt is old)."""

    status: Mapped[JobStatus] = mapped_column(string_enum(JobStatus, "status"), default=JobStatus.queued)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # Higher first; among equals, the oldest. A job retried after a transient failure waits until not_before.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    not_before: Mapped[datetime | None]
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None]
    message: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class WorkerProcess(Base):
    """A process that claims jobs (`sprout worker`, or the worker inside `sprout serve`): who it is, which code it
    runs, and its heartbeat in database time, so any instance can tell the fleet's live workers from dead ones."""

    __tablename__ = "worker"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the worker_id its claims carry
    kind: Mapped[str] = mapped_column(String(16))  # "worker" (its own process) or "service" (inside serve)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]
    running: Mapped[int] = mapped_column(Integer, default=0)  # jobs it holds now
    claimed: Mapped[int] = mapped_column(Integer, default=0)  # claims since it started
