"""The shapes of `GET /v1/jobs`: one row per job, whatever its kind, with the figures an operator watches."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.jobs.models import JobStatus

JobKind = Literal["generation", "fine_tune"]
JOB_KINDS: tuple[JobKind, ...] = ("generation", "fine_tune")


class DatasetRef(BaseModel):
    id: int
    name: str


class Progress(BaseModel):
    """How far a job got: a generation job's accepted items of those requested, a fine-tuning job's training
    steps (known once its trainer reported the first step)."""

    done: int
    total: int
    fraction: float = Field(ge=0.0, le=1.0)

    @classmethod
    def of(cls, done: int, total: int) -> Progress | None:
        if total <= 0:
            return None
        done = max(done, 0)
        return cls(done=done, total=total, fraction=min(1.0, done / total))


class GenerationCounters(BaseModel):
    requests: int
    prompts: int
    raw: int
    parsed: int
    filtered: int = Field(description="Parsed items dropped by a filter (all reasons).")
    duplicates: int
    accepted: int
    errors: int


class Tokens(BaseModel):
    prompt: int | None = None
    completion: int | None = None
    trained: int | None = None
    total: int = 0


class JobRow(BaseModel):
    kind: JobKind
    id: int
    public_id: str | None = Field(None, description="A fine-tuning job's ftjob-... id.")
    dataset: DatasetRef | None
    status: JobStatus
    stage: str | None = Field(
        None,
        description="A fine-tuning job's OpenAI status (validating_files while its files wait for checks).",
    )
    cancel_requested: bool
    priority: int
    attempt: int
    worker_id: str | None
    backend: str | None = Field(None, description="A generation job's named backend.")
    model: str | None = Field(None, description="The model a job names (a fine-tuning job's base model).")
    fine_tuned_model: str | None = None
    progress: Progress | None
    counters: GenerationCounters | None = None
    tokens: Tokens
    busy_seconds: float | None = Field(None, description="Seconds its runs took, over every attempt.")
    message: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    not_before: datetime | None = Field(
        None, description="A job waiting out a retry backoff starts after this."
    )
    url: str = Field(description="The job in its own API.")
    cancel_url: str | None = Field(description="Where to POST a cancel (None once the job is final).")


class JobPage(BaseModel):
    """Newest first; pass `next_cursor` back as `after` for the next page (None on the last one)."""

    data: list[JobRow]
    next_cursor: str | None
