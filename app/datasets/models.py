"""Tables of the datasets room: datasets and their seed tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow


class Dataset(Base):
    __tablename__ = "dataset"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Generation settings that apply to every job of the dataset unless the job overrides them.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (CheckConstraint("length(name) > 0", name="name_not_empty"),)


class SeedTask(Base):
    __tablename__ = "seed_task"
    __table_args__ = (
        UniqueConstraint("dataset_id", "instruction_hash", name="uq_seed_task_instruction"),
        CheckConstraint("length(instruction) > 0", name="instruction_not_empty"),
    )

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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
