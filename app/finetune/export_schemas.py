"""Request and response bodies of snapshots (exports answer with files, not JSON bodies)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.finetune.models import Snapshot
from app.finetune.snapshots import DEFAULT_VALIDATION_FRACTION, MAX_SEED


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="Seed of the train/validation split; left out, one is drawn and recorded on the snapshot. "
        "The same seed over the same items gives the same split.",
    )
    validation_fraction: float = Field(
        default=DEFAULT_VALIDATION_FRACTION,
        ge=0,
        le=0.5,
        description="Share of the items held out for validation (at least one item when there are two or more "
        "and the fraction is above 0).",
    )


class SnapshotCounts(BaseModel):
    items: int
    train: int
    validation: int


class SnapshotOut(BaseModel):
    id: int
    object: Literal["dataset.snapshot"] = "dataset.snapshot"
    dataset_id: int
    created_at: int = Field(description="Unix seconds.")
    created_by: str
    content_hash: str = Field(description="sha256 over the copied records in order, splits included.")
    counts: SnapshotCounts
    seed: int
    validation_fraction: float
    summary: dict[str, Any] = Field(
        description="What stood behind it: the dataset's settings, the near-duplicate thresholds, items by "
        "status, languages and models of its items, and review statistics."
    )
    training_file: str = Field(description="The training split as OpenAI chat JSONL (a `file-...` id).")
    validation_file: str | None = Field(description="The validation split, or null when it is empty.")

    @classmethod
    def of(cls, snapshot: Snapshot, public_ids: dict[int, str]) -> SnapshotOut:
        return cls(
            id=snapshot.id,
            dataset_id=snapshot.dataset_id,
            created_at=int(snapshot.created_at.timestamp()),
            created_by=snapshot.created_by,
            content_hash=snapshot.content_hash,
            counts=SnapshotCounts(items=snapshot.items, train=snapshot.train, validation=snapshot.validation),
            seed=snapshot.seed,
            validation_fraction=snapshot.validation_fraction,
            summary=snapshot.summary or {},
            training_file=public_ids[snapshot.training_file_id],
            validation_file=(
                public_ids[snapshot.validation_file_id] if snapshot.validation_file_id is not None else None
            ),
        )


class SnapshotList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SnapshotOut]
    has_more: bool
