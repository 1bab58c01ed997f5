"""Request and response bodies of the schedules room."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.generation.params import GenerationParams
from app.jobs.models import JobStatus
from app.schedules.models import Schedule, ScheduleRun

TargetStatus = Literal["accepted", "approved"]
ScheduleState = Literal["active", "paused", "ended"]

# Field rules shared by the create body (with its defaults) and the update body (absent: unchanged).


def _name(default: Any = ...) -> Any:
    return Field(
        default,
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Unique; the CLI finds a schedule by it (or by its id).",
    )


def _cron(default: Any = ...) -> Any:
    return Field(
        default,
        min_length=1,
        max_length=120,
        description="5 fields (minute hour day month weekday), or 6 with seconds last (`* * * * * *`: every "
        "second), or an alias such as @daily; read with croniter.",
    )


def _timezone(default: Any) -> Any:
    return Field(
        default, min_length=1, max_length=64, description="IANA zone the cron is read in, e.g. Asia/Shanghai."
    )


def _priority(default: Any) -> Any:
    return Field(
        default, ge=-100, le=100, description="Priority of the jobs it queues: higher first (as a job's own)."
    )


def _max_runs() -> Any:
    return Field(None, ge=1, le=1_000_000_000, description="Stop after this many runs that queued a job.")


def _target_items() -> Any:
    return Field(
        None,
        ge=1,
        le=1_000_000_000,
        description="Stop once the dataset holds this many items of target_status.",
    )


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = _name()
    dataset_id: int = Field(ge=1, le=2**62)
    cron: str = _cron()
    timezone: str = _timezone("UTC")
    backend: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="A configured backend; default: params.backend, else the service's default (fixed now).",
    )
    params: GenerationParams = Field(
        default_factory=GenerationParams, description="What each firing's generation job runs with."
    )
    priority: int = _priority(0)
    enabled: bool = True
    coalesce: bool = Field(
        default=True, description="Firings missed while nothing ran become one run (else one run each)."
    )
    max_runs: int | None = _max_runs()
    target_items: int | None = _target_items()
    target_status: TargetStatus = Field(
        default="accepted",
        description="accepted: every item the accept step kept (all but filtered); approved: reviewed and approved.",
    )


class ScheduleUpdate(BaseModel):
    """Fields to change; absent ones stay. `params` is merged into the stored parameters (null removes one);
    `max_runs` or `target_items` null removes that limit. Changing cron or timezone recomputes the next fire
    time from now; `enabled` pauses or resumes."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = _name(None)
    cron: str | None = _cron(None)
    timezone: str | None = _timezone(None)
    backend: str | None = Field(default=None, min_length=1, max_length=64)
    params: dict[str, Any] | None = None
    priority: int | None = _priority(None)
    enabled: bool | None = None
    coalesce: bool | None = None
    max_runs: int | None = _max_runs()
    target_items: int | None = _target_items()
    target_status: TargetStatus | None = None

    def changes(self) -> dict[str, Any]:
        """The fields the body named, with their values (None included: it clears a limit)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class ScheduleOut(BaseModel):
    id: int
    object: Literal["schedule"] = "schedule"
    name: str
    dataset_id: int
    backend: str
    params: dict[str, Any]
    priority: int
    cron: str
    timezone: str
    enabled: bool
    state: ScheduleState = Field(description="active; paused (enabled false by a person); ended (by itself).")
    coalesce: bool
    max_runs: int | None
    target_items: int | None
    target_status: TargetStatus
    runs: int = Field(description="Firings that queued a job.")
    missed: int = Field(description="Firings folded into a later run (coalesced).")
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    ended_reason: str | None
    upcoming: list[datetime] | None = Field(
        default=None, description="The next fire times (one schedule's answers only; none while not enabled)."
    )
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, schedule: Schedule, upcoming: list[datetime] | None = None) -> ScheduleOut:
        return cls(
            id=schedule.id,
            name=schedule.name,
            dataset_id=schedule.dataset_id,
            backend=schedule.backend,
            params=schedule.params,
            priority=schedule.priority,
            cron=schedule.cron,
            timezone=schedule.timezone,
            enabled=schedule.enabled,
            state=state_of(schedule),
            coalesce=schedule.coalesce,
            max_runs=schedule.max_runs,
            target_items=schedule.target_items,
            target_status=schedule.target_status,  # type: ignore[arg-type]
            runs=schedule.runs,
            missed=schedule.missed,
            next_fire_at=schedule.next_fire_at,
            last_fire_at=schedule.last_fire_at,
            ended_reason=schedule.ended_reason,
            upcoming=upcoming,
            created_by=schedule.created_by,
            created_at=schedule.created_at,
            updated_at=schedule.updated_at,
        )


def state_of(schedule: Schedule) -> ScheduleState:
    if schedule.enabled:
        return "active"
    return "ended" if schedule.ended_reason else "paused"


class RunJob(BaseModel):
    """The generation job a run queued, as it is now."""

    id: int
    status: JobStatus
    requested: int
    accepted: int


class ScheduleRunOut(BaseModel):
    id: int
    schedule_id: int
    fire_time: datetime
    outcome: Literal["queued", "skipped"]
    coalesced: int = Field(description="Due fire times this run stands for (1 unless firings were missed).")
    job_id: int | None
    job: RunJob | None = Field(
        description="The job's status and accepted items now (None once it is deleted)."
    )
    message: str | None = Field(description="Why it was skipped, or what was adjusted.")
    fired_by: str = Field(description="The worker that fired it.")
    created_at: datetime

    @classmethod
    def of(cls, run: ScheduleRun, job: RunJob | None) -> ScheduleRunOut:
        return cls(
            id=run.id,
            schedule_id=run.schedule_id,
            fire_time=run.fire_time,
            outcome=run.outcome,  # type: ignore[arg-type]
            coalesced=run.coalesced,
            job_id=run.job_id,
            job=job,
            message=run.message,
            fired_by=run.fired_by,
            created_at=run.created_at,
        )
