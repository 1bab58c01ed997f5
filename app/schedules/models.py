"""Tables of the schedules room: cron schedules that queue generation jobs, and the record of every firing.

A firing's key is (schedule id, fire time), unique in `schedule_run`: two service instances (or workers) that
both see a schedule due can never both queue its job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow


class Schedule(Base):
    __tablename__ = "schedule"
    __table_args__ = (
        Index("ix_schedule_due", "enabled", "next_fire_at"),
        CheckConstraint("length(name) > 0 AND length(cron) > 0", name="names_not_empty"),
        CheckConstraint("target_status IN ('accepted', 'approved')", name="target_status_valid"),
        CheckConstraint(
            "runs >= 0 AND missed >= 0 AND (max_runs IS NULL OR max_runs >= 1) "
            "AND (target_items IS NULL OR target_items >= 1)",
            name="counts_valid",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), index=True)
    # What each firing queues: a generation job on this configured backend with these parameters.
    backend: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # When: a cron expression (5 fields, or 6 with seconds) read in an IANA time zone.
    cron: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Firings missed while nothing ran: one run for all of them (coalesce) or one run each.
    coalesce: Mapped[bool] = mapped_column(Boolean, default=True)
    # When to stop by itself: after max_runs runs, or once the dataset holds target_items items of
    # target_status ("accepted": every item the accept step kept; "approved": reviewed and approved).
    max_runs: Mapped[int | None] = mapped_column(Integer)
    target_items: Mapped[int | None] = mapped_column(Integer)
    target_status: Mapped[str] = mapped_column(String(16), default="accepted")
    runs: Mapped[int] = mapped_column(Integer, default=0)  # firings that queued a job
    missed: Mapped[int] = mapped_column(Integer, default=0)  # firings folded into a later one (coalesced)
    next_fire_at: Mapped[datetime | None]  # UTC; None once it stopped or is paused
    last_fire_at: Mapped[datetime | None]
    ended_reason: Mapped[str | None] = mapped_column(Text)  # why it stopped by itself
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ScheduleRun(Base):
    """One firing of a schedule: the job it queued, or why it queued none (skipped)."""

    __tablename__ = "schedule_run"
    __table_args__ = (
        UniqueConstraint("schedule_id", "fire_time", name="uq_schedule_run_firing"),
        CheckConstraint("coalesced >= 1", name="coalesced_positive"),
        CheckConstraint("outcome IN ('queued', 'skipped')", name="outcome_valid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedule.id", ondelete="CASCADE"))
    fire_time: Mapped[datetime]  # the cron time this run answers (UTC), part of its unique key
    # The due fire times it stands for: 1, or n when firings missed while nothing ran were coalesced into it.
    coalesced: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    outcome: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("generation_job.id", ondelete="SET NULL"))
    message: Mapped[str | None] = mapped_column(Text)
    fired_by: Mapped[str] = mapped_column(String(200))  # the worker id that fired it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
