"""Request and response bodies of the datasets room."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.datasets.models import Dataset, SeedTask


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f/]+$")
    description: str = Field(default="", max_length=10_000)
    settings: dict[str, Any] = Field(default_factory=dict)


class DatasetCounts(BaseModel):
    seeds: int = 0
    jobs: int = 0
    items: int = 0
    pending: int = 0
    approved: int = 0
    rejected: int = 0
    filtered: int = 0
    disputed: int = 0


class DatasetOut(BaseModel):
    id: int
    name: str
    description: str
    settings: dict[str, Any]
    created_at: datetime
    counts: DatasetCounts

    @classmethod
    def of(cls, dataset: Dataset, counts: dict[str, int]) -> DatasetOut:
        return cls(
            id=dataset.id,
            name=dataset.name,
            description=dataset.description,
            settings=dataset.settings,
            created_at=dataset.created_at,
            counts=DatasetCounts(**counts),
        )


class SeedInstanceOut(BaseModel):
    input: str
    output: str


class SeedTaskOut(BaseModel):
    id: int
    dataset_id: int
    name: str | None
    instruction: str
    instances: list[SeedInstanceOut]
    is_classification: bool
    source: str
    created_at: datetime

    @classmethod
    def of(cls, seed: SeedTask) -> SeedTaskOut:
        return cls.model_validate(seed, from_attributes=True)


class SeedImportOut(BaseModel):
    dataset_id: int
    format: str
    parsed: int
    imported: int
    skipped_existing: int
    total_seeds: int
