"""ORM tables (SQLAlchemy 2.0 typed models). Every schema change comes with an Alembic migration."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # VARCHAR + CHECK rather than a native PostgreSQL ENUM: adding a state later is a plain migration.
    return Enum(cls, name=name, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class ItemStatus(enum.StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    filtered = "filtered"


class Dataset(Base):
    __tablename__ = "dataset"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Generation settings that apply to every job of the dataset unless the job overrides them.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    seeds: Mapped[list[SeedTask]] = relationship(back_populates="dataset", cascade="all, delete-orphan")


class SeedTask(Base):
    __tablename__ = "seed_task"
    __table_args__ = (UniqueConstraint("dataset_id", "instruction_hash", name="uq_seed_task_instruction"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    instruction: Mapped[str] = mapped_column(Text)
    # sha256 of the instruction: a unique key that works on long texts in every database.
    instruction_hash: Mapped[str] = mapped_column(String(64))
    instances: Mapped[list[Any]] = mapped_column(default=list)
    is_classification: Mapped[bool] = mapped_column(Boolean, default=False)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[str] = mapped_column(String(200), default="")
    source_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="seeds")


class GenerationJob(Base):
    __tablename__ = "generation_job"
    __table_args__ = (Index("ix_generation_job_status_created", "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.queued)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Live counters: requested (items wanted), prompts sent, raw chunks the model wrote, parsed items,
    # filtered by reason, near-duplicates, accepted (stored as pending). parsed = sum(filtered) + duplicates
    # + accepted; raw - parsed chunks could not be parsed.
    requested: Mapped[int] = mapped_column(Integer, default=0)
    prompts: Mapped[int] = mapped_column(Integer, default=0)
    raw: Mapped[int] = mapped_column(Integer, default=0)
    parsed: Mapped[int] = mapped_column(Integer, default=0)
    filtered: Mapped[dict[str, Any]] = mapped_column(default=dict)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Item(Base):
    __tablename__ = "item"
    __table_args__ = (
        Index("ix_item_dataset_status_id", "dataset_id", "status", "id"),
        Index("ix_item_job_id", "job_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("generation_job.id", ondelete="SET NULL"))
    instruction: Mapped[str] = mapped_column(Text)
    input: Mapped[str] = mapped_column(Text, default="")
    output: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[ItemStatus] = mapped_column(_enum(ItemStatus, "item_status"), default=ItemStatus.pending)
    # Why an item was filtered: a heuristic reason code, or "near_duplicate" (then duplicate_signal says which
    # signal fired: exact, rouge_l, fuzzy, semantic).
    filter_reason: Mapped[str | None] = mapped_column(String(64))
    duplicate_signal: Mapped[str | None] = mapped_column(String(16))
    # Nearest accepted neighbour by ROUGE-L: a seed task or an item of the same dataset.
    nearest_kind: Mapped[str | None] = mapped_column(String(8))
    nearest_id: Mapped[int | None] = mapped_column(Integer)
    nearest_rouge_l: Mapped[float | None] = mapped_column(Float)
    fuzzy_score: Mapped[float | None] = mapped_column(Float)
    semantic_score: Mapped[float | None] = mapped_column(Float)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    quality: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model: Mapped[str | None] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __mapper_args__ = {"version_id_col": version}
