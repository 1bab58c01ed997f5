"""Request and response bodies of the HTTP API (pydantic at the edge; the services take plain values)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from app.models import Dataset, GenerationJob, Item, ItemStatus, JobStatus, SeedTask

T = TypeVar("T")


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class Out(BaseModel):
    @field_serializer("*", when_used="json")
    def _times_in_utc(self, value: Any) -> Any:
        return _utc(value) if isinstance(value, datetime) else value


class Page(BaseModel, Generic[T]):
    data: list[T]
    total: int
    limit: int
    offset: int


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


class DatasetOut(Out):
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


class SeedTaskOut(Out):
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


class JobCounters(BaseModel):
    requested: int
    prompts: int
    raw: int
    parsed: int
    unparsed: int = Field(
        description="Chunks of model output that did not parse into an item (raw - parsed)."
    )
    filtered: dict[str, int] = Field(description="Items dropped by a heuristic filter, by reason.")
    duplicates: int = Field(description="Items dropped as near-duplicates of a seed or an earlier item.")
    accepted: int = Field(description="Items stored as pending (waiting for review).")
    prompt_tokens: int
    completion_tokens: int


class JobOut(Out):
    id: int
    object: Literal["generation_job"] = "generation_job"
    dataset_id: int
    status: JobStatus
    cancel_requested: bool
    params: dict[str, Any]
    counters: JobCounters
    message: str | None
    error: str | None
    attempt: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: GenerationJob) -> JobOut:
        return cls(
            id=job.id,
            dataset_id=job.dataset_id,
            status=job.status,
            cancel_requested=job.cancel_requested,
            params=job.params,
            counters=JobCounters(
                requested=job.requested,
                prompts=job.prompts,
                raw=job.raw,
                parsed=job.parsed,
                unparsed=job.raw - job.parsed,
                filtered=job.filtered or {},
                duplicates=job.duplicates,
                accepted=job.accepted,
                prompt_tokens=job.prompt_tokens,
                completion_tokens=job.completion_tokens,
            ),
            message=job.message,
            error=job.error,
            attempt=job.attempt,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class Neighbour(BaseModel):
    kind: Literal["seed", "item"] | None
    id: int | None
    rouge_l: float | None


class ItemOut(Out):
    id: int
    dataset_id: int
    job_id: int | None
    instruction: str
    input: str
    output: str
    status: ItemStatus
    filter_reason: str | None
    duplicate_signal: str | None
    nearest: Neighbour | None
    fuzzy_score: float | None
    semantic_score: float | None
    labels: dict[str, Any]
    model: str | None
    version: int
    created_at: datetime
    decided_at: datetime | None

    @classmethod
    def of(cls, item: Item) -> ItemOut:
        nearest = None
        if item.nearest_kind is not None:
            nearest = Neighbour(kind=item.nearest_kind, id=item.nearest_id, rouge_l=item.nearest_rouge_l)  # type: ignore[arg-type]
        return cls(
            id=item.id,
            dataset_id=item.dataset_id,
            job_id=item.job_id,
            instruction=item.instruction,
            input=item.input,
            output=item.output,
            status=item.status,
            filter_reason=item.filter_reason,
            duplicate_signal=item.duplicate_signal,
            nearest=nearest,
            fuzzy_score=item.fuzzy_score,
            semantic_score=item.semantic_score,
            labels=item.labels,
            model=item.model,
            version=item.version,
            created_at=item.created_at,
            decided_at=item.decided_at,
        )


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    worker: str
    backend: str
    version: str
