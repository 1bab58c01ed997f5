"""`sprout schedules ...`: cron schedules that queue generation jobs, from a shell (the same service as
/v1/schedules). A schedule is named by its name (or id), a dataset by its name. Workers (`sprout serve`,
`sprout worker`) fire the schedules; these commands only store them. Names, messages and parameters are printed
as plain text, never as rich markup."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from app.cli.common import console, fail, plain, sessions_for
from app.core.config import get_settings
from app.core.db import transaction
from app.core.errors import ConflictError, InvalidFieldError, NotFoundError
from app.datasets.service import get_dataset_by_name
from app.llm.registry import BackendRegistry
from app.schedules import service
from app.schedules.models import Schedule
from app.schedules.schemas import ScheduleCreate, ScheduleUpdate, state_of

app = typer.Typer(
    help="Cron schedules that queue generation jobs: create, list, show, update, pause, resume, delete, runs.",
    no_args_is_help=True,
)

Errors = (ConflictError, InvalidFieldError, NotFoundError)
STATE_STYLES = {"active": "green", "paused": "yellow", "ended": "dim"}
OUTCOME_STYLES = {"queued": "green", "skipped": "yellow"}

ScheduleRef = Annotated[str, typer.Argument(help="The schedule's name (or id).")]
CronOption = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="5 fields, or 6 with seconds last ('* * * * * *': every second), or @daily etc."),
]
TimezoneOption = Annotated[Optional[str], typer.Option(help="IANA zone the cron is read in.")]  # noqa: UP045
BackendOption = Annotated[Optional[str], typer.Option(help="A configured backend.")]  # noqa: UP045
CountOption = Annotated[Optional[int], typer.Option("--count", "-n", help="Items each job accepts.")]  # noqa: UP045
ParamsOption = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help='More job parameters as JSON, e.g. \'{"language": "zh", "temperature": 0.9}\'.'),
]
PriorityOption = Annotated[Optional[int], typer.Option(help="Priority of its jobs, -100..100.")]  # noqa: UP045
TargetStatusOption = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="accepted (every item kept; the default) or approved."),
]


def _fmt(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "-"


def _params(count: int | None, params: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if params is not None:
        try:
            values = json.loads(params)
        except json.JSONDecodeError as exc:
            raise fail(f"--params: not JSON ({exc.msg})") from None
        if not isinstance(values, dict):
            raise fail('--params: a JSON object, e.g. \'{"language": "zh"}\'')
    if count is not None:
        values["count"] = count
    return values


def _field_error(exc: ValidationError) -> typer.Exit:
    return fail("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))


def _print(schedule: Schedule) -> None:
    state = state_of(schedule)
    console.print(
        plain(
            (schedule.name, "bold"),
            f"  (id {schedule.id})  ",
            (state, STATE_STYLES[state]),
            "  ",
            schedule.cron,
            f"  in {schedule.timezone}",
        )
    )
    limits = []
    if schedule.max_runs is not None:
        limits.append(f"stops after {schedule.max_runs} runs")
    if schedule.target_items is not None:
        limits.append(f"stops at {schedule.target_items} {schedule.target_status} items")
    console.print(
        plain(
            f"  dataset {schedule.dataset_id}, backend ",
            schedule.backend,
            f", priority {schedule.priority}, {'coalesces' if schedule.coalesce else 'one run per missed firing'}",
            f"; {', '.join(limits)}" if limits else "",
        )
    )
    console.print(
        plain("  job parameters: ", json.dumps(schedule.params, ensure_ascii=False, sort_keys=True))
    )
    console.print(
        plain(
            f"  runs {schedule.runs}, missed {schedule.missed}, last fired {_fmt(schedule.last_fire_at)}, "
            f"next {_fmt(schedule.next_fire_at)}"
        )
    )
    if schedule.ended_reason:
        console.print(plain("  ended: ", schedule.ended_reason))


def _dataset_id(session: Any, name: str) -> int:
    return get_dataset_by_name(session, name).id


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A unique name for the schedule.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="The dataset's name.")],
    cron: Annotated[
        str,
        typer.Option(help="5 fields, or 6 with seconds last ('* * * * * *': every second), or @daily etc."),
    ],
    timezone: Annotated[str, typer.Option(help="IANA zone the cron is read in.")] = "UTC",
    backend: BackendOption = None,
    count: CountOption = None,
    params: ParamsOption = None,
    priority: PriorityOption = None,
    paused: Annotated[bool, typer.Option("--paused", help="Store it paused (resume it later).")] = False,
    coalesce: Annotated[
        bool, typer.Option("--coalesce/--no-coalesce", help="Missed firings become one run, or one run each.")
    ] = True,
    max_runs: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many runs.")] = None,  # noqa: UP045
    target_items: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="Stop once the dataset holds this many items (of --target-status)."),
    ] = None,
    target_status: TargetStatusOption = None,
) -> None:
    """Store a schedule: each firing of CRON queues a generation job on DATASET."""
    settings = get_settings()
    sessions = sessions_for(settings)
    try:
        with transaction(sessions) as session:
            fields: dict[str, Any] = {
                "name": name,
                "dataset_id": _dataset_id(session, dataset),
                "cron": cron,
                "timezone": timezone,
                "backend": backend,
                "params": _params(count, params),
                "enabled": not paused,
                "coalesce": coalesce,
                "max_runs": max_runs,
                "target_items": target_items,
            }
            if priority is not None:
                fields["priority"] = priority
            if target_status is not None:
                fields["target_status"] = target_status
            try:
                body = ScheduleCreate(**fields)
            except ValidationError as exc:
                raise _field_error(exc) from None
            schedule = service.create_schedule(
                session, body, settings, BackendRegistry.from_settings(settings), "cli"
            )
            upcoming = service.upcoming(schedule)
    except Errors as exc:
        raise fail(str(exc)) from exc
    console.print(plain("created schedule ", (schedule.name, "bold"), f" (id {schedule.id})"))
    for moment in upcoming:
        console.print(f"  fires at {_fmt(moment)}")


@app.command("list")
def list_command(
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Only this dataset's.")] = None,  # noqa: UP045
) -> None:
    """Every schedule, with its state and next fire time."""
    sessions = sessions_for(get_settings())
    try:
        with sessions() as session:
            dataset_id = _dataset_id(session, dataset) if dataset is not None else None
            rows = service.list_schedules(session, dataset_id=dataset_id)
    except Errors as exc:
        raise fail(str(exc)) from exc
    table = Table("id", "name", "state", "cron", "timezone", "dataset", "runs", "missed", "next fire (UTC)")
    for s in rows:
        state = state_of(s)
        table.add_row(
            str(s.id),
            Text(s.name),
            Text(state, style=STATE_STYLES[state]),
            Text(s.cron),
            Text(s.timezone),
            str(s.dataset_id),
            str(s.runs),
            str(s.missed),
            _fmt(s.next_fire_at),
        )
    console.print(table)


@app.command("show")
def show(schedule: ScheduleRef) -> None:
    """One schedule: what it queues, its limits, its counters and its next fire times."""
    sessions = sessions_for(get_settings())
    try:
        with sessions() as session:
            found = service.find_schedule(session, schedule)
            upcoming = service.upcoming(found)
    except Errors as exc:
        raise fail(str(exc)) from exc
    _print(found)
    for moment in upcoming:
        console.print(f"  fires at {_fmt(moment)}")


@app.command("update")
def update(
    schedule: ScheduleRef,
    name: Annotated[Optional[str], typer.Option(help="A new name.")] = None,  # noqa: UP045
    cron: CronOption = None,
    timezone: TimezoneOption = None,
    backend: BackendOption = None,
    count: CountOption = None,
    params: ParamsOption = None,
    priority: PriorityOption = None,
    coalesce: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option("--coalesce/--no-coalesce", help="Missed firings become one run, or one run each."),
    ] = None,
    max_runs: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=0, help="Stop after this many runs; 0 removes the limit."),
    ] = None,
    target_items: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=0, help="Stop at this many items; 0 removes the target."),
    ] = None,
    target_status: TargetStatusOption = None,
) -> None:
    """Change what is given; --params merges into the stored job parameters (a null removes one)."""
    settings = get_settings()
    sessions = sessions_for(settings)
    fields: dict[str, Any] = {
        key: value
        for key, value in {
            "name": name,
            "cron": cron,
            "timezone": timezone,
            "backend": backend,
            "priority": priority,
            "coalesce": coalesce,
            "target_status": target_status,
        }.items()
        if value is not None
    }
    if count is not None or params is not None:
        fields["params"] = _params(count, params)
    if max_runs is not None:
        fields["max_runs"] = max_runs or None
    if target_items is not None:
        fields["target_items"] = target_items or None
    if not fields:
        raise fail("nothing to change: give at least one option (see --help)")
    try:
        body = ScheduleUpdate(**fields)
    except ValidationError as exc:
        raise _field_error(exc) from None
    try:
        with transaction(sessions) as session:
            found = service.find_schedule(session, schedule)
            changed = service.update_schedule(
                session, found.id, body, settings, BackendRegistry.from_settings(settings)
            )
    except Errors as exc:
        raise fail(str(exc)) from exc
    _print(changed)


@app.command("pause")
def pause(schedule: ScheduleRef) -> None:
    """Nothing fires until it is resumed."""
    sessions = sessions_for(get_settings())
    try:
        with transaction(sessions) as session:
            found = service.pause_schedule(session, service.find_schedule(session, schedule).id)
    except Errors as exc:
        raise fail(str(exc)) from exc
    console.print(plain("paused ", (found.name, "bold")))


@app.command("resume")
def resume(schedule: ScheduleRef) -> None:
    """Fire again from the next fire time after now (firings missed while paused are not run)."""
    sessions = sessions_for(get_settings())
    try:
        with transaction(sessions) as session:
            found = service.resume_schedule(session, service.find_schedule(session, schedule).id)
    except Errors as exc:
        raise fail(str(exc)) from exc
    console.print(plain("resumed ", (found.name, "bold"), f": next fire at {_fmt(found.next_fire_at)}"))


@app.command("delete")
def delete(schedule: ScheduleRef) -> None:
    """Delete the schedule and its run history (the jobs it queued stay)."""
    sessions = sessions_for(get_settings())
    try:
        with transaction(sessions) as session:
            found = service.find_schedule(session, schedule)
            name = found.name
            service.delete_schedule(session, found.id)
    except Errors as exc:
        raise fail(str(exc)) from exc
    console.print(plain("deleted ", (name, "bold")))


@app.command("runs")
def runs(
    schedule: ScheduleRef,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Runs shown, latest first.")] = 20,
) -> None:
    """The schedule's latest runs: fire time, outcome, firings it stands for, its job (status, accepted)."""
    sessions = sessions_for(get_settings())
    try:
        with sessions() as session:
            found = service.find_schedule(session, schedule)
            rows, _ = service.list_runs(session, found.id, limit=limit)
            jobs = service.jobs_of(session, rows)
    except Errors as exc:
        raise fail(str(exc)) from exc
    table = Table("fire time (UTC)", "outcome", "coalesced", "job", "job status", "accepted", "message")
    for run in rows:
        job = jobs.get(run.job_id) if run.job_id is not None else None
        table.add_row(
            _fmt(run.fire_time),
            Text(run.outcome, style=OUTCOME_STYLES.get(run.outcome, "")),
            str(run.coalesced),
            str(run.job_id) if run.job_id is not None else "",
            job.status.value if job is not None else "",
            f"{job.accepted}/{job.requested}" if job is not None else "",
            Text(run.message or ""),
        )
    console.print(table)
