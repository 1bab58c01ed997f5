"""Tables of the generation room: jobs, the raw replies they received, and the items they produced."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, string_enum, utcnow
from app.jobs.models import LeasedJob

DuplicateSignal = Literal["exact", "rouge_l", "fuzzy", "semantic"]
DUPLICATE_SIGNALS: tuple[DuplicateSignal, ...] = get_args(DuplicateSignal)


class ItemStatus(enum.StrEnum):
    pending = "pending"  # waiting for review
    approved = "approved"
    rejected = "rejected"
    filtered = "filtered"  # dropped by a filter or as a near-duplicate, with the reason
    disputed = "disputed"  # reviewers disagreed (overlap > 1): an admin settles it


class ImportStatus(enum.StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class GenerationJob(LeasedJob, Base):
    __tablename__ = "generation_job"
    __table_args__ = (
        Index("ix_generation_job_status_created", "status", "created_at"),
        Index("ix_generation_job_claim", "status", "priority", "id"),  # the queue's order
        Index("ix_generation_job_dataset_status", "dataset_id", "status"),  # the per-dataset running limit
        CheckConstraint(
            "requested >= 1 AND requests >= 0 AND prompts >= 0 AND raw >= 0 AND parsed >= 0 AND duplicates >= 0 "
            "AND accepted >= 0 AND errors >= 0 AND prompt_tokens >= 0 AND completion_tokens >= 0 AND attempt >= 0",
            name="counters_not_negative",
        ),
        CheckConstraint("parsed <= raw", name="parsed_within_raw"),
        CheckConstraint("duplicates + accepted <= parsed", name="kept_within_parsed"),
        CheckConstraint(
            "status <> 'running' OR (worker_id IS NOT NULL AND lease_until IS NOT NULL)",
            name="running_is_leased",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), index=True)
    # The parameters as validated at the edge, with the backend name and the sampling seed filled in.
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    backend: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    # Live counters. requests: answered or failed requests; prompts: prompts they carried; raw: chunks the
    # model wrote; parsed = sum(filtered) + duplicates + accepted; errors: requests that yielded nothing.
    requested: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompts: Mapped[int] = mapped_column(Integer, default=0)
    raw: Mapped[int] = mapped_column(Integer, default=0)
    parsed: Mapped[int] = mapped_column(Integer, default=0)
    filtered: Mapped[dict[str, Any]] = mapped_column(default=dict)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # Seconds its runs took, over every attempt (usage: time per job, per dataset, per backend).
    busy_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))


class GenerationReply(Base):
    """One request of a job and what came back: the raw texts (clipped), or the error. Its request number is
    what a resumed job skips, and what a user reads to see why a reply yielded nothing."""

    __tablename__ = "generation_reply"
    __table_args__ = (
        UniqueConstraint("job_id", "request_no", name="uq_generation_reply_request"),
        CheckConstraint("request_no >= 0 AND prompts >= 1 AND attempt >= 1", name="numbers_valid"),
        CheckConstraint(
            "raw >= 0 AND parsed >= 0 AND accepted >= 0 AND accepted <= parsed AND parsed <= raw",
            name="counts_valid",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("generation_job.id", ondelete="CASCADE"))
    request_no: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    prompts: Mapped[int] = mapped_column(Integer)
    # [{"prompt_index", "text", "truncated", "finish_reason", "items", "unparsed"}], one per choice.
    choices: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[int] = mapped_column(Integer, default=0)
    parsed: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ItemImport(Base):
    """A file of instruction data brought into a dataset: its items went through the same filters and index as
    generated ones. The counters say how far it got and what became of its records."""

    __tablename__ = "item_import"
    __table_args__ = (
        CheckConstraint(
            "records >= 0 AND done >= 0 AND done <= records AND accepted >= 0 AND duplicates >= 0",
            name="counts_valid",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(16))
    status: Mapped[ImportStatus] = mapped_column(
        string_enum(ImportStatus, "status"), default=ImportStatus.running
    )
    created_by: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    filtered: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


# "Most doubtful first" sorts on this expression; the index below holds it (the literal must stay a literal).
DOUBT_SQL = "coalesce(nearest_rouge_l, 0.0)"


class Item(Base):
    __tablename__ = "item"
    __table_args__ = (
        Index("ix_item_dataset_status_id", "dataset_id", "status", "id"),
        Index("ix_item_dataset_id_id", "dataset_id", "id"),  # the accept step's catch-up: new rows only
        Index("ix_item_job_id_id", "job_id", "id"),
        Index("ix_item_import_id_id", "import_id", "id"),
        # The review queue's filters and its "most doubtful first" order, each an index led by the dataset.
        Index("ix_item_dataset_status_language", "dataset_id", "status", "language", "id"),
        Index("ix_item_dataset_reason", "dataset_id", "filter_reason", "id"),
        Index("ix_item_dataset_signal", "dataset_id", "duplicate_signal", "id"),
        Index("ix_item_review_doubt", "dataset_id", "status", text(DOUBT_SQL), "id"),
        Index("ix_item_dataset_doubt", "dataset_id", text(DOUBT_SQL), "id"),  # the same, over every status
        Index("ix_item_dataset_reason_doubt", "dataset_id", "filter_reason", text(DOUBT_SQL), "id"),
        CheckConstraint("(status = 'filtered') = (filter_reason IS NOT NULL)", name="filtered_has_reason"),
        CheckConstraint(
            "duplicate_signal IS NULL OR (filter_reason = 'near_duplicate' AND duplicate_signal IN "
            "('exact', 'rouge_l', 'fuzzy', 'semantic'))",
            name="duplicate_signal_valid",
        ),
        CheckConstraint(
            "nearest_kind IS NULL OR nearest_kind IN ('seed', 'item')", name="nearest_kind_valid"
        ),
        CheckConstraint(
            "nearest_rouge_l IS NULL OR (nearest_rouge_l >= 0 AND nearest_rouge_l <= 1)", name="rouge_l_range"
        ),
        CheckConstraint(
            "fuzzy_score IS NULL OR (fuzzy_score >= 0 AND fuzzy_score <= 100)", name="fuzzy_range"
        ),
        CheckConstraint(
            "semantic_score IS NULL OR (semantic_score >= -1.0001 AND semantic_score <= 1.0001)",
            name="semantic_range",
        ),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("length(instruction) > 0", name="instruction_not_empty"),
        CheckConstraint("language IN ('zh', 'ja', 'ko', 'latin', 'mixed', 'other')", name="language_valid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("generation_job.id", ondelete="SET NULL"))
    reply_id: Mapped[int | None] = mapped_column(ForeignKey("generation_reply.id", ondelete="SET NULL"))
    import_id: Mapped[int | None] = mapped_column(ForeignKey("item_import.id", ondelete="SET NULL"))
    instruction: Mapped[str] = mapped_column(Text)
    input: Mapped[str] = mapped_column(Text, default="")
    output: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[ItemStatus] = mapped_column(string_enum(ItemStatus, "status"), default=ItemStatus.pending)
    # Why an item was filtered: a heuristic reason code, or "near_duplicate" (then duplicate_signal says which
    # signal fired: exact, rouge_l, fuzzy, semantic).
    filter_reason: Mapped[str | None] = mapped_column(String(64))
    duplicate_signal: Mapped[str | None] = mapped_column(String(16))
    # Nearest accepted neighbour by ROUGE-L (or by the signal that fired): a seed task or an item.
    nearest_kind: Mapped[str | None] = mapped_column(String(8))
    nearest_id: Mapped[int | None] = mapped_column(Integer)
    nearest_rouge_l: Mapped[float | None] = mapped_column(Float)
    fuzzy_score: Mapped[float | None] = mapped_column(Float)
    semantic_score: Mapped[float | None] = mapped_column(Float)
    # The script rule of app/reports/language.py: zh, ja, ko, latin, mixed or other.
    language: Mapped[str] = mapped_column(String(8), default="other", server_default="other")
    # The text as generated (or imported), kept once a reviewer edits it: {"instruction", "input", "output"}.
    original: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    quality: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model: Mapped[str | None] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]

    __mapper_args__ = {"version_id_col": version}


class ItemCount(Base):
    """Items per dataset and status, kept exact by database triggers on `item` (migration 0003): counting
    50,000 rows for every page would make large datasets slow. Read it summed over shards."""

    __tablename__ = "item_count"

    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    # A (dataset, status) count is the sum of its shards: concurrent writers each touch one shard (PostgreSQL).
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
