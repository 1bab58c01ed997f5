"""Response bodies of the ops room: usage and the fleet's workers."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.ops.service import WorkerState, WorkerView
from app.ops.usage import Usage, UsageBy


class UsageRow(BaseModel):
    dataset_id: int | None = Field(description="The dataset (by=dataset, by=job).")
    dataset: str | None = Field(description="Its name.")
    backend: str | None = Field(description="The backend (by=backend, by=job).")
    job_id: int | None = Field(description="The job (by=job).")
    status: str | None = Field(description="The job's status (by=job).")
    created_at: datetime | None = Field(description="When the job was queued (by=job).")
    finished_at: datetime | None = Field(description="When it ended (by=job).")
    jobs: int
    requests: int = Field(description="Requests answered or failed.")
    prompts: int = Field(description="Prompts those requests carried.")
    errors: int = Field(description="Requests that failed after retries or yielded nothing readable.")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    busy_seconds: float = Field(description="Time the jobs ran, over every attempt.")
    parsed: int = Field(description="Items parsed from the replies.")
    duplicates: int = Field(description="Parsed items dropped as near-duplicates.")
    accepted: int = Field(description="Items kept (stored as pending).")
    acceptance_rate: float | None = Field(description="accepted / parsed (null before anything parsed).")
    accepted_per_1k_completion_tokens: float | None = Field(
        description="Items kept per 1,000 completion tokens (null before any token)."
    )

    @classmethod
    def of(cls, usage: Usage) -> UsageRow:
        return cls(
            dataset_id=usage.dataset_id,
            dataset=usage.dataset,
            backend=usage.backend,
            job_id=usage.job_id,
            status=usage.status,
            created_at=usage.created_at,
            finished_at=usage.finished_at,
            jobs=usage.jobs,
            requests=usage.requests,
            prompts=usage.prompts,
            errors=usage.errors,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            busy_seconds=usage.busy_seconds,
            parsed=usage.parsed,
            duplicates=usage.duplicates,
            accepted=usage.accepted,
            acceptance_rate=usage.acceptance_rate,
            accepted_per_1k_completion_tokens=usage.accepted_per_1k_completion_tokens,
        )


class UsageOut(BaseModel):
    by: UsageBy
    dataset_id: int | None
    backend: str | None
    since: datetime | None
    until: datetime | None
    total: UsageRow = Field(description="Every job the filters match (all pages).")
    data: list[UsageRow]
    next_cursor: str | None = Field(
        default=None, description="by=job: pass back as `cursor` for the next page (null on the last)."
    )


class WorkerOut(BaseModel):
    id: str
    kind: str = Field(description="worker (`sprout worker`) or service (the worker inside `sprout serve`).")
    hostname: str
    pid: int
    version: str
    state: WorkerState = Field(
        description="alive (heartbeat within 3 intervals), stale (silent for longer: presumed dead) or stopped."
    )
    heartbeat_age_seconds: float = Field(description="Seconds since its last heartbeat, in database time.")
    running: int = Field(description="Jobs it held at its last heartbeat.")
    claimed: int = Field(description="Claims since it started.")
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None

    @classmethod
    def of(cls, view: WorkerView) -> WorkerOut:
        return cls(
            id=view.id,
            kind=view.kind,
            hostname=view.hostname,
            pid=view.pid,
            version=view.version,
            state=view.state,
            heartbeat_age_seconds=round(view.heartbeat_age_seconds, 3),
            running=view.running,
            claimed=view.claimed,
            started_at=view.started_at,
            heartbeat_at=view.heartbeat_at,
            stopped_at=view.stopped_at,
        )
