"""The columns every durable job has: a status, a lease held by one worker, an attempt number that fences.

Generation jobs have them today; [6/8]'s fine-tuning jobs and schedule firings reuse the same mixin, so one
queue (app/jobs/queue.py) claims, renews, fences and requeues them all.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import string_enum, utcnow


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
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None]
    message: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
