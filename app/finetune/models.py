"""Tables of the fine-tuning room: stored files (kept in the database, in chunks), snapshots of approved items,
fine-tuning jobs with their events and checkpoints, and the LoRA adapters registered on serving backends.

File contents live in the database, not on one machine's disk: a worker on another machine (and [6/8]'s worker
processes) reads a training file from the same place the API wrote it, and deleting a file is one transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.jobs.models import LeasedJob

# OpenAI's purposes that Sprout stores: training data in, training results out.
FILE_PURPOSES = ("fine-tune", "fine-tune-results")


class StoredFile(Base):
    """A file of the OpenAI-compatible files API (`file-...`): an upload, a snapshot's split or a job's result."""

    __tablename__ = "stored_file"
    __table_args__ = (
        CheckConstraint("bytes >= 0 AND records >= 0", name="sizes_valid"),
        CheckConstraint("purpose IN ('fine-tune', 'fine-tune-results')", name="purpose_valid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(Integer, default=0)  # JSONL lines (0 for binary results)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FileChunk(Base):
    """The content of a stored file, in order: chunks of at most CHUNK_BYTES, so neither an upload nor a
    download ever holds a whole large file in memory."""

    __tablename__ = "file_chunk"

    file_id: Mapped[int] = mapped_column(ForeignKey("stored_file.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Snapshot(Base):
    """An immutable copy of a dataset's approved items at one moment, split into train and validation by seed.
    Its items are copied (snapshot_item), so a later edit or reopening in review never changes it."""

    __tablename__ = "snapshot"
    __table_args__ = (
        CheckConstraint("items >= 1 AND train >= 1 AND validation >= 0", name="counts_valid"),
        CheckConstraint(
            "validation_fraction >= 0 AND validation_fraction < 1", name="validation_fraction_range"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="RESTRICT"), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    items: Mapped[int] = mapped_column(Integer)
    train: Mapped[int] = mapped_column(Integer)
    validation: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    validation_fraction: Mapped[float] = mapped_column(Float)
    # What stood behind it: the dataset's settings, languages, models and review statistics at that moment.
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Set at the end of the transaction that makes the snapshot: the files are written from its copied items.
    training_file_id: Mapped[int | None] = mapped_column(ForeignKey("stored_file.id", ondelete="RESTRICT"))
    validation_file_id: Mapped[int | None] = mapped_column(ForeignKey("stored_file.id", ondelete="RESTRICT"))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SnapshotItem(Base):
    __tablename__ = "snapshot_item"
    __table_args__ = (
        CheckConstraint("split IN ('train', 'validation')", name="split_valid"),
        Index("ix_snapshot_item_item", "item_id"),
    )

    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshot.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(Integer)  # no foreign key: the copy outlives the item
    split: Mapped[str] = mapped_column(String(10))
    instruction: Mapped[str] = mapped_column(Text)
    input: Mapped[str] = mapped_column(Text, default="")
    output: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str] = mapped_column(String(8), default="other")
    model: Mapped[str | None] = mapped_column(String(200))


class FineTuneJob(LeasedJob, Base):
    """A fine-tuning job of the OpenAI-compatible API (`ftjob-...`). The queue columns come from LeasedJob;
    `files_validated` splits OpenAI's first two states: a queued or claimed job whose files were not checked
    yet is `validating_files`, a queued one whose files passed is `queued`."""

    __tablename__ = "fine_tune_job"
    __table_args__ = (
        Index("ix_fine_tune_job_status_created", "status", "created_at"),
        Index("ix_fine_tune_job_dataset", "dataset_id", "id"),
        Index("ix_fine_tune_job_claim", "status", "priority", "id"),  # the queue's order
        CheckConstraint(
            "status <> 'running' OR (worker_id IS NOT NULL AND lease_until IS NOT NULL)",
            name="running_is_leased",
        ),
        CheckConstraint("attempt >= 0", name="attempt_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    model: Mapped[str] = mapped_column(String(200))  # a configured base model's name
    trainer: Mapped[str] = mapped_column(String(64))  # "local" or a configured remote trainer
    training_file_id: Mapped[int] = mapped_column(ForeignKey("stored_file.id", ondelete="RESTRICT"))
    validation_file_id: Mapped[int | None] = mapped_column(ForeignKey("stored_file.id", ondelete="RESTRICT"))
    # As asked ("auto" or a number each) and as resolved once the data is known.
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    suffix: Mapped[str | None] = mapped_column(String(18))
    seed: Mapped[int] = mapped_column(BigInteger)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON(none_as_null=True))
    files_validated: Mapped[bool] = mapped_column(Boolean, default=False)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(300))
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_param: Mapped[str | None] = mapped_column(String(64))
    result_files: Mapped[list[Any]] = mapped_column(default=list)
    # Validation loss before and after, base vs tuned answers to held-out instructions, the loss masking used.
    evaluation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("dataset.id", ondelete="SET NULL"))
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshot.id", ondelete="SET NULL"))
    remote_job_id: Mapped[str | None] = mapped_column(String(200))  # the job's id on a remote trainer
    created_by: Mapped[str] = mapped_column(String(64))


class FineTuneEvent(Base):
    """`fine_tuning.job.event`: a message or a metrics record (step, losses, learning rate, tokens/s)."""

    __tablename__ = "fine_tune_event"
    __table_args__ = (
        Index("ix_fine_tune_event_job_id", "job_id", "id"),
        CheckConstraint("type IN ('message', 'metrics')", name="type_valid"),
        CheckConstraint("level IN ('info', 'warn', 'error')", name="level_valid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("fine_tune_job.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(8), default="info")
    type: Mapped[str] = mapped_column(String(8), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # A remote trainer's event id: mirroring it twice is a no-op.
    remote_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FineTuneCheckpoint(Base):
    """`fine_tuning.job.checkpoint`: a saved step of a job, with the metrics at that step."""

    __tablename__ = "fine_tune_checkpoint"
    __table_args__ = (UniqueConstraint("job_id", "step_number", name="uq_fine_tune_checkpoint_step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("fine_tune_job.id", ondelete="CASCADE"))
    step_number: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoraAdapter(Base):
    """A tuned model registered on a serving backend (vLLM with --enable-lora): loaded again after the backend
    restarts, and what a generation job may name as its model."""

    __tablename__ = "lora_adapter"
    __table_args__ = (UniqueConstraint("backend", "name", name="uq_lora_adapter_backend_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    backend: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(300))  # the job's fine_tuned_model
    job_id: Mapped[int] = mapped_column(ForeignKey("fine_tune_job.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)  # where the server reads it (under settings.finetune_dir)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    loaded_at: Mapped[datetime | None]
