"""Schedules: create, change, pause, resume, delete, read their run history, and fire the due ones.

Firing (`fire_due`, called by every worker every `schedule_poll_seconds`, any number of processes at once):
1. One transaction per schedule takes one due schedule (`enabled` and `next_fire_at` at or before the
   database's clock) and locks it: `FOR UPDATE SKIP LOCKED` on PostgreSQL, so firers skip each other instead of
   queueing; on SQLite the write transaction (BEGIN IMMEDIATE) already serializes them.
2. The due fire times from `next_fire_at` to now become one firing (coalesce: the latest time, standing for
   all of them) or one firing each (at most `cron.MAX_FIRINGS_PER_CALL` per call).
3. Each firing inserts its `schedule_run` keyed (schedule id, fire time) with ON CONFLICT DO NOTHING, in the
   same transaction as the job it queues: a key already fired inserts nothing and queues nothing.
4. A firing queues a generation job (priority from the schedule) unless the schedule's previous job is still
   queued or running, the dataset reached its target, or the job cannot be queued (backend gone, no seeds):
   then the run is `skipped` with the reason. Reaching the target or max_runs ends the schedule.
5. `next_fire_at` moves past what was fired, and the transaction commits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import transaction, utc_now
from app.core.errors import ConflictError, InvalidFieldError, NotFoundError
from app.datasets.service import get_dataset
from app.finetune.serving import check_adapter
from app.generation.models import GenerationJob
from app.generation.params import GenerationParams
from app.generation.service import get_job, item_counts, jobs_by_id, queue_job
from app.jobs.models import JobStatus
from app.llm.registry import BackendRegistry
from app.schedules.cron import Cron, CronError, Firing, parse_cron, plan_firings
from app.schedules.models import Schedule, ScheduleRun
from app.schedules.schemas import ScheduleCreate, ScheduleUpdate

log = logging.getLogger(__name__)

UPCOMING = 3  # fire times shown with one schedule
SCHEDULES_PER_CALL = 100  # schedules one fire_due call handles at most; the rest are due at the next call
# Parameters that live in their own columns, not in the stored job parameters.
_COLUMNS_NOT_PARAMS = frozenset({"backend", "priority"})


# --- reading --------------------------------------------------------------------------------------------------


def database_now(session: Session) -> datetime:
    """The database's clock: every process decides what is due by the same time."""
    return session.scalar(select(utc_now()))  # type: ignore[return-value]


def get_schedule(session: Session, schedule_id: int, *, lock: bool = False) -> Schedule:
    schedule = session.get(Schedule, schedule_id, with_for_update=lock or None)
    if schedule is None:
        raise NotFoundError(f"schedule {schedule_id} not found")
    return schedule


def find_schedule(session: Session, ref: str) -> Schedule:
    """A schedule by name, or by id when no schedule has that name."""
    found = session.scalar(select(Schedule).where(Schedule.name == ref))
    if found is not None:
        return found
    if ref.isdigit():
        return get_schedule(session, int(ref))
    raise NotFoundError(f"schedule {ref!r} not found")


def list_schedules(session: Session, *, dataset_id: int | None = None) -> list[Schedule]:
    query = select(Schedule).order_by(Schedule.id)
    if dataset_id is not None:
        query = query.where(Schedule.dataset_id == dataset_id)
    return list(session.scalars(query))


def upcoming(schedule: Schedule, n: int = UPCOMING) -> list[datetime]:
    """The next `n` fire times of an enabled schedule (the first is `next_fire_at`, even if already due)."""
    if not schedule.enabled or schedule.next_fire_at is None:
        return []
    try:
        cron = parse_cron(schedule.cron, schedule.timezone)
        return [schedule.next_fire_at, *cron.upcoming(schedule.next_fire_at, n - 1)]
    except CronError:
        return [schedule.next_fire_at]


def list_runs(
    session: Session, schedule_id: int, *, limit: int, before: datetime | None = None
) -> tuple[list[ScheduleRun], datetime | None]:
    """A schedule's runs, latest fire time first, in keyset pages (on the unique (schedule, fire time) index):
    the runs and the cursor of the next page (None on the last)."""
    get_schedule(session, schedule_id)
    query = select(ScheduleRun).where(ScheduleRun.schedule_id == schedule_id)
    if before is not None:
        query = query.where(ScheduleRun.fire_time < before)
    rows = list(session.scalars(query.order_by(ScheduleRun.fire_time.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, rows[-1].fire_time if more and rows else None


def jobs_of(session: Session, runs: Sequence[ScheduleRun]) -> dict[int, GenerationJob]:
    """The generation jobs the runs queued, as they are now, by id (a deleted job is absent)."""
    return jobs_by_id(session, [r.job_id for r in runs if r.job_id is not None])


# --- changing -------------------------------------------------------------------------------------------------


def create_schedule(
    session: Session,
    body: ScheduleCreate,
    settings: Settings,
    registry: BackendRegistry,
    created_by: str,
    *,
    now: datetime | None = None,
) -> Schedule:
    """Store a schedule. Its backend is fixed now (the default backend's name when none is given), and its first
    fire time is the first after now (database time) unless it starts paused."""
    try:
        get_dataset(session, body.dataset_id)
    except NotFoundError as exc:
        raise InvalidFieldError("dataset_id", str(exc)) from None
    _check_name_free(session, body.name)
    params = body.params
    if body.backend is not None and params.backend is not None and body.backend != params.backend:
        raise InvalidFieldError("params.backend", f"differs from backend {body.backend!r}: give one of them")
    backend = body.backend or params.backend or settings.default_backend
    priority = body.priority if "priority" in body.model_fields_set else params.priority
    _check_backend(session, registry, backend, params, field="backend" if body.backend else "params.backend")
    cron = _cron(body.cron, body.timezone)
    moment = now or database_now(session)
    schedule = Schedule(
        name=body.name,
        dataset_id=body.dataset_id,
        backend=backend,
        params=_stored(params),
        priority=priority,
        cron=cron.expression,
        timezone=cron.timezone,
        enabled=body.enabled,
        coalesce=body.coalesce,
        max_runs=body.max_runs,
        target_items=body.target_items,
        target_status=body.target_status,
        runs=0,
        missed=0,
        next_fire_at=_next(cron, moment) if body.enabled else None,
        created_by=created_by,
    )
    session.add(schedule)
    _flush_named(session, body.name)
    return schedule


def update_schedule(
    session: Session,
    schedule_id: int,
    body: ScheduleUpdate,
    settings: Settings,
    registry: BackendRegistry,
    *,
    now: datetime | None = None,
) -> Schedule:
    """Change the fields the body names (see ScheduleUpdate); the schedule's row is locked meanwhile."""
    schedule = get_schedule(session, schedule_id, lock=True)
    changes = body.changes()
    for key in ("name", "cron", "timezone", "backend", "priority", "enabled", "coalesce", "target_status"):
        if key in changes and changes[key] is None:
            raise InvalidFieldError(key, "may not be null")
    if "name" in changes and changes["name"] != schedule.name:
        _check_name_free(session, changes["name"])
        schedule.name = changes["name"]
    patch = dict(changes.get("params") or {})
    for key in _COLUMNS_NOT_PARAMS:  # accepted inside params too, as on create
        value = patch.pop(key, None)
        if value is not None:
            if key in changes and changes[key] != value:
                raise InvalidFieldError(
                    f"params.{key}", f"differs from {key} {changes[key]!r}: give one of them"
                )
            changes[key] = value
    if patch or "backend" in changes or "priority" in changes:
        merged = {k: v for k, v in {**schedule.params, **patch}.items() if v is not None}
        merged["priority"] = changes.get("priority", schedule.priority)
        params = _params(merged)
        backend = changes.get("backend", schedule.backend)
        _check_backend(session, registry, backend, params, field="backend")
        schedule.params, schedule.backend, schedule.priority = _stored(params), backend, params.priority
    for key in ("coalesce", "max_runs", "target_items", "target_status"):
        if key in changes:
            setattr(schedule, key, changes[key])
    moment = now or database_now(session)
    if "cron" in changes or "timezone" in changes:
        cron = _cron(changes.get("cron", schedule.cron), changes.get("timezone", schedule.timezone))
        schedule.cron, schedule.timezone = cron.expression, cron.timezone
        if schedule.enabled:
            schedule.next_fire_at = _next(cron, moment)
    if changes.get("enabled") is True and not schedule.enabled:
        _resume(schedule, moment)
    elif changes.get("enabled") is False:
        _pause(schedule)
    if schedule.enabled and _ran_out(schedule):
        _end(schedule, _ran_out_reason(schedule))
    session.flush()
    return schedule


def pause_schedule(session: Session, schedule_id: int) -> Schedule:
    """Nothing fires until it is resumed (pausing a paused or ended schedule changes nothing)."""
    schedule = get_schedule(session, schedule_id, lock=True)
    _pause(schedule)
    session.flush()
    return schedule


def resume_schedule(session: Session, schedule_id: int, *, now: datetime | None = None) -> Schedule:
    """Fire again from the next fire time after now: firings missed while paused are not run. An ended schedule
    resumes too (its ended_reason is cleared), unless it already ran max_runs times (409)."""
    schedule = get_schedule(session, schedule_id, lock=True)
    if not schedule.enabled:
        _resume(schedule, now or database_now(session))
        session.flush()
    return schedule


def delete_schedule(session: Session, schedule_id: int) -> None:
    """The schedule and its run history; jobs it queued stay."""
    session.delete(get_schedule(session, schedule_id, lock=True))
    session.flush()


def _pause(schedule: Schedule) -> None:
    if schedule.enabled:
        schedule.enabled = False
        schedule.next_fire_at = None


def _resume(schedule: Schedule, moment: datetime) -> None:
    if _ran_out(schedule):
        raise ConflictError(
            f"schedule {schedule.name!r} already ran {schedule.runs} times (max_runs {schedule.max_runs}): "
            "raise max_runs or clear it to resume"
        )
    schedule.enabled = True
    schedule.ended_reason = None
    schedule.next_fire_at = _next(parse_cron(schedule.cron, schedule.timezone), moment)


def _end(schedule: Schedule, reason: str) -> None:
    schedule.enabled = False
    schedule.next_fire_at = None
    schedule.ended_reason = reason


def _ran_out(schedule: Schedule) -> bool:
    return schedule.max_runs is not None and schedule.runs >= schedule.max_runs


def _ran_out_reason(schedule: Schedule) -> str:
    return f"ran {schedule.runs} times (max_runs {schedule.max_runs})"


def _cron(expression: str, timezone: str) -> Cron:
    try:
        return parse_cron(expression, timezone)
    except CronError as exc:
        raise InvalidFieldError(exc.field, exc.message) from None


def _next(cron: Cron, moment: datetime) -> datetime:
    try:
        return cron.next_after(moment)
    except CronError as exc:
        raise InvalidFieldError(exc.field, exc.message) from None


def _params(values: dict[str, Any]) -> GenerationParams:
    """Stored or merged job parameters, validated as a job's are; a 422 naming the field otherwise."""
    try:
        return GenerationParams.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in ("params", *error["loc"]))
        raise InvalidFieldError(field, error["msg"]) from None


def _stored(params: GenerationParams) -> dict[str, Any]:
    return params.model_dump(mode="json", exclude_none=True, exclude=set(_COLUMNS_NOT_PARAMS))


def _check_backend(
    session: Session, registry: BackendRegistry, backend: str, params: GenerationParams, *, field: str
) -> None:
    """The backend is configured, and a tuned model the parameters name is registered on it (as queue_job
    checks at each firing, so a mistake is a 422 now rather than a skipped run later)."""
    try:
        backend_settings = registry.settings_of(backend)
    except InvalidFieldError as exc:
        raise InvalidFieldError(field, exc.message) from None
    if params.model is not None and params.model != backend_settings.model:
        try:
            check_adapter(session, backend, params.model)
        except InvalidFieldError as exc:
            raise InvalidFieldError("params.model", exc.message) from None


def _check_name_free(session: Session, name: str) -> None:
    if session.scalar(select(Schedule.id).where(Schedule.name == name)) is not None:
        raise ConflictError(f"schedule name {name!r} is already taken")


def _flush_named(session: Session, name: str) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:  # a concurrent create took the name
        raise ConflictError(f"schedule name {name!r} is already taken") from exc


# --- firing ---------------------------------------------------------------------------------------------------


def fire_due(
    sessions: sessionmaker[Session],
    settings: Settings,
    registry: BackendRegistry,
    worker_id: str,
    *,
    now: datetime | None = None,
    limit: int = SCHEDULES_PER_CALL,
) -> list[int]:
    """Fire every due schedule (up to `limit`), each in a transaction of its own; the ids of the jobs queued.

    `now` replaces the database's clock (tests). Many processes may call this at once: each firing happens
    once. A schedule that fails in an unexpected way is logged and left for the next call; nothing is raised."""
    if not _any_due(sessions, now):  # most calls: a read, no write lock (SQLite's is the accept step's too)
        return []
    queued: list[int] = []
    failed: set[int] = set()
    for _ in range(limit):
        picked: list[int] = []
        try:
            with transaction(sessions) as session:
                fired = _fire_next(session, settings, registry, worker_id, now, failed, picked)
        except (OperationalError, InterfaceError):
            raise  # the database is away, not this schedule at fault: the worker waits and tries again
        except Exception:  # noqa: BLE001 (one schedule's failure must not stop the worker or the others)
            if not picked:
                log.exception("could not look for due schedules")
                break
            log.exception("schedule %s could not fire; it is tried again at the next poll", picked[0])
            failed.add(picked[0])
            continue
        if fired is None:
            break
        queued.extend(fired)
    return queued


def _any_due(sessions: sessionmaker[Session], now: datetime | None) -> bool:
    with sessions() as session:
        moment = now if now is not None else utc_now()
        return (
            session.scalar(
                select(Schedule.id).where(Schedule.enabled, Schedule.next_fire_at <= moment).limit(1)
            )
            is not None
        )


def _fire_next(
    session: Session,
    settings: Settings,
    registry: BackendRegistry,
    worker_id: str,
    now: datetime | None,
    exclude: set[int],
    picked: list[int],
) -> list[int] | None:
    """Fire the most overdue schedule nobody else is firing: the jobs queued, or None when none is due."""
    moment = now or database_now(session)
    query = (
        select(Schedule)
        .where(Schedule.enabled, Schedule.next_fire_at <= moment)
        .order_by(Schedule.next_fire_at, Schedule.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if exclude:
        query = query.where(Schedule.id.not_in(exclude))
    schedule = session.scalar(query)
    if schedule is None:
        return None
    picked.append(schedule.id)
    assert schedule.next_fire_at is not None
    try:
        cron = parse_cron(schedule.cron, schedule.timezone)
        plan = plan_firings(cron, schedule.next_fire_at, moment, coalesce=schedule.coalesce)
    except CronError as exc:  # stored before a rule changed: it can never fire again
        _end(schedule, f"its cron can no longer be used: {exc}")
        return []
    queued: list[int] = []
    for firing in plan.firings:
        job_id = _fire(session, schedule, firing, settings, registry, worker_id, counted_all=plan.complete)
        if job_id is not None:
            queued.append(job_id)
        if not schedule.enabled:
            break
    if schedule.enabled:
        schedule.next_fire_at = plan.next_fire_at
    session.flush()
    return queued


class _AlreadyFired(Exception):
    """The firing's key is taken: another process fired it. Nothing of this firing may be written."""


def _fire(
    session: Session,
    schedule: Schedule,
    firing: Firing,
    settings: Settings,
    registry: BackendRegistry,
    worker_id: str,
    *,
    counted_all: bool,
) -> int | None:
    """One firing: a queued job (its id) or a skipped run (None), recorded under its unique key."""

    def record(outcome: str, job_id: int | None = None, message: str | None = None) -> bool:
        if firing.coalesced > 1 and not counted_all:
            message = f"{message + '; ' if message else ''}{firing.coalesced} or more missed firings (counting stops there)"
        return _record(session, schedule, firing, worker_id, outcome, job_id, message)

    if _ran_out(schedule):
        _end(schedule, _ran_out_reason(schedule))
        return None
    held = None
    if schedule.target_items is not None:
        held = _held(session, schedule)
        if held >= schedule.target_items:
            reason = (
                f"the dataset holds {held} {schedule.target_status} items, "
                f"reaching the target of {schedule.target_items}"
            )
            if record("skipped", message=f"stopped: {reason}"):
                _end(schedule, reason)
            return None
    live = _live_job(session, schedule)
    if live is not None:
        record(
            "skipped", message=f"generation job {live.id} from an earlier run is still {live.status.value}"
        )
        return None
    message = None
    try:
        with session.begin_nested():
            params = _params({**schedule.params, "backend": schedule.backend, "priority": schedule.priority})
            if held is not None and schedule.target_status == "accepted":
                short = schedule.target_items - held  # type: ignore[operator]
                if params.count > short:
                    params = params.model_copy(update={"count": short})
                    message = (
                        f"count lowered to {short}: the dataset is {short} accepted items short of its target"
                    )
            job = queue_job(session, schedule.dataset_id, params, settings, registry)
            if not record("queued", job.id, message):
                raise _AlreadyFired
    except _AlreadyFired:
        return None
    except (InvalidFieldError, ConflictError, NotFoundError) as exc:
        record("skipped", message=f"could not queue a generation job: {exc}")
        return None
    schedule.runs += 1
    if _ran_out(schedule):
        _end(schedule, _ran_out_reason(schedule))
    log.info("schedule %s fired for %s: generation job %s", schedule.id, firing.fire_time.isoformat(), job.id)
    return job.id


def _record(
    session: Session,
    schedule: Schedule,
    firing: Firing,
    worker_id: str,
    outcome: str,
    job_id: int | None,
    message: str | None,
) -> bool:
    """Insert the run under its key (schedule id, fire time); False when the key was already taken."""
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(ScheduleRun)
        .values(
            schedule_id=schedule.id,
            fire_time=firing.fire_time,
            coalesced=firing.coalesced,
            outcome=outcome,
            job_id=job_id,
            message=message,
            fired_by=worker_id[:200],
        )
        .on_conflict_do_nothing(index_elements=[ScheduleRun.schedule_id, ScheduleRun.fire_time])
        .returning(ScheduleRun.id)
    )
    if session.scalar(statement) is None:
        log.info("schedule %s: firing %s was already fired", schedule.id, firing.fire_time.isoformat())
        return False
    schedule.last_fire_at = firing.fire_time
    schedule.missed += firing.coalesced - 1
    return True


def _held(session: Session, schedule: Schedule) -> int:
    """Items of the schedule's target status in its dataset: "accepted" counts every item the accept step kept
    (all statuses but filtered), "approved" the approved ones."""
    counts = item_counts(session, [schedule.dataset_id])[schedule.dataset_id]
    if schedule.target_status == "approved":
        return counts["approved"]
    return counts["items"] - counts["filtered"]


def _live_job(session: Session, schedule: Schedule) -> GenerationJob | None:
    """The job of the schedule's latest run that queued one, if it is still queued or running."""
    job_id = session.scalar(
        select(ScheduleRun.job_id)
        .where(ScheduleRun.schedule_id == schedule.id, ScheduleRun.job_id.is_not(None))
        .order_by(ScheduleRun.fire_time.desc())  # the unique (schedule, fire time) index, read backwards
        .limit(1)
    )
    if job_id is None:
        return None
    try:
        job = get_job(session, job_id)
    except NotFoundError:
        return None
    return job if job.status in (JobStatus.queued, JobStatus.running) else None
