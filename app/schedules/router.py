"""Cron schedules that queue generation jobs: create, list, show (with the next fire times), change, pause,
resume, delete, and the history of their runs. The firing itself is the workers' (service.fire_due)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.api.deps import ReadSession, RegistryDep, SettingsDep, WriteSession
from app.api.schemas import CursorPage
from app.auth.deps import Generator, Reader
from app.core.errors import InvalidFieldError
from app.schedules import service
from app.schedules.schemas import RunJob, ScheduleCreate, ScheduleOut, ScheduleRunOut, ScheduleUpdate

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])


def _one(schedule) -> ScheduleOut:  # noqa: ANN001 (Schedule)
    return ScheduleOut.of(schedule, service.upcoming(schedule))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ScheduleOut)
def create(
    principal: Generator,
    body: ScheduleCreate,
    response: Response,
    session: WriteSession,
    settings: SettingsDep,
    registry: RegistryDep,
) -> ScheduleOut:
    """A schedule: each firing of `cron` (read in `timezone`) queues a generation job on the dataset."""
    schedule = service.create_schedule(session, body, settings, registry, principal.name)
    response.headers["Location"] = f"/v1/schedules/{schedule.id}"
    return _one(schedule)


@router.get("", response_model=list[ScheduleOut])
def list_all(_: Reader, session: ReadSession, dataset_id: int | None = None) -> list[ScheduleOut]:
    return [ScheduleOut.of(s) for s in service.list_schedules(session, dataset_id=dataset_id)]


@router.get("/{schedule_id}", response_model=ScheduleOut)
def get(_: Reader, schedule_id: int, session: ReadSession) -> ScheduleOut:
    """One schedule, with its next fire times (`upcoming`)."""
    return _one(service.get_schedule(session, schedule_id))


@router.patch("/{schedule_id}", response_model=ScheduleOut)
def update(
    _: Generator,
    schedule_id: int,
    body: ScheduleUpdate,
    session: WriteSession,
    settings: SettingsDep,
    registry: RegistryDep,
) -> ScheduleOut:
    """Change the fields given; `params` merges into the stored parameters (null removes one)."""
    return _one(service.update_schedule(session, schedule_id, body, settings, registry))


@router.post("/{schedule_id}/pause", response_model=ScheduleOut)
def pause(_: Generator, schedule_id: int, session: WriteSession) -> ScheduleOut:
    """Nothing fires until it is resumed."""
    return _one(service.pause_schedule(session, schedule_id))


@router.post("/{schedule_id}/resume", response_model=ScheduleOut)
def resume(_: Generator, schedule_id: int, session: WriteSession) -> ScheduleOut:
    """Fire again from the next fire time after now (firings missed while paused are not run); 409 once it has
    run max_runs times."""
    return _one(service.resume_schedule(session, schedule_id))


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete(_: Generator, schedule_id: int, session: WriteSession) -> Response:
    """The schedule and its run history (the jobs it queued stay)."""
    service.delete_schedule(session, schedule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{schedule_id}/runs", response_model=CursorPage[ScheduleRunOut])
def runs(
    _: Reader,
    schedule_id: int,
    session: ReadSession,
    cursor: Annotated[str | None, Query(max_length=64, description="next_cursor of the page before.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> CursorPage[ScheduleRunOut]:
    """The schedule's runs, latest fire time first: each one's outcome, the firings it stands for, the job it
    queued (with that job's status and accepted items now) or why it queued none."""
    before = None
    if cursor is not None:
        try:
            before = datetime.fromisoformat(cursor)
        except ValueError:
            raise InvalidFieldError("cursor", "not a cursor this list gave", location="query") from None
        if before.tzinfo is None:
            raise InvalidFieldError("cursor", "not a cursor this list gave", location="query")
    rows, next_before = service.list_runs(session, schedule_id, limit=limit, before=before)
    jobs = service.jobs_of(session, rows)
    data = []
    for run in rows:
        job = jobs.get(run.job_id) if run.job_id is not None else None
        summary = (
            RunJob(id=job.id, status=job.status, requested=job.requested, accepted=job.accepted)
            if job is not None
            else None
        )
        data.append(ScheduleRunOut.of(run, summary))
    return CursorPage(data=data, next_cursor=next_before.isoformat() if next_before else None)
