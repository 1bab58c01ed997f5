"""`sprout usage` and `sprout workers`: what generation jobs cost and yielded, and the fleet's workers, read from
the database (the same figures as GET /v1/usage and GET /v1/workers). Names are printed as plain text."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.cli.common import console, fail, sessions_for
from app.core.config import get_settings
from app.core.errors import NotFoundError
from app.datasets.service import get_dataset_by_name
from app.ops.schemas import UsageRow, WorkerOut
from app.ops.service import WorkerState, database_now, worker_views
from app.ops.usage import Usage, UsageBy, UsageFilter, as_utc, usage_report

_COLUMNS = (
    ("jobs", "jobs"),
    ("requests", "requests"),
    ("errors", "errors"),
    ("prompt tok", "prompt_tokens"),
    ("completion tok", "completion_tokens"),
    ("time s", "busy_seconds"),
    ("parsed", "parsed"),
    ("accepted", "accepted"),
    ("accept rate", "acceptance_rate"),
    ("per 1K tok", "accepted_per_1k_completion_tokens"),
)


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise fail(
            f"{option} must be an ISO 8601 time such as 2025-01-31 or 2025-01-31T12:00:00+00:00"
        ) from None


def _cell(value: object) -> Text:
    if value is None:
        return Text("-")
    if isinstance(value, float):
        return Text(f"{value:.3f}" if value < 100 else f"{value:.1f}")
    return Text(str(value))


def usage(
    by: Annotated[
        UsageBy, typer.Option(help="Sum per dataset or per backend, or list jobs.")
    ] = UsageBy.dataset,
    dataset: Annotated[Optional[str], typer.Option(help="Only this dataset's jobs (by name).")] = None,  # noqa: UP045
    backend: Annotated[Optional[str], typer.Option(help="Only jobs on this backend.")] = None,  # noqa: UP045
    since: Annotated[
        Optional[str], typer.Option(help="Jobs queued at or after (ISO 8601; UTC if no zone).")
    ] = None,  # noqa: UP045
    until: Annotated[Optional[str], typer.Option(help="Jobs queued before (ISO 8601).")] = None,  # noqa: UP045
    limit: Annotated[
        int, typer.Option(min=1, max=10_000, help="Jobs shown (--by job), the newest first.")
    ] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (the API's shape) instead of a table.")
    ] = False,
) -> None:
    """Tokens, requests, errors, time and yield of generation jobs, per dataset, per backend or per job."""
    start, end = _moment(since, "--since"), _moment(until, "--until")
    if start is not None and end is not None and end <= start:
        raise fail("--until must be later than --since")
    sessions = sessions_for(get_settings())
    with sessions() as session:
        dataset_id = None
        if dataset is not None:
            try:
                dataset_id = get_dataset_by_name(session, dataset).id
            except NotFoundError as exc:
                raise fail(str(exc)) from exc
        where = UsageFilter(dataset_id=dataset_id, backend=backend, since=start, until=end)
        total, rows, _ = usage_report(session, by, where, limit=limit)
    if as_json:
        body = {
            "by": by.value,
            "total": UsageRow.of(total).model_dump(mode="json"),
            "data": [UsageRow.of(r).model_dump(mode="json") for r in rows],
        }
        typer.echo(json.dumps(body, ensure_ascii=False, indent=2))
        return
    table = Table(title=f"generation usage by {by.value}", title_justify="left")
    keys = {
        UsageBy.dataset: ("dataset",),
        UsageBy.backend: ("backend",),
        UsageBy.job: ("job", "dataset", "backend", "status"),
    }[by]
    for column in keys:
        table.add_column(column)
    for header, _field in _COLUMNS:
        table.add_column(header, justify="right")

    def key_cells(row: Usage) -> list[Text]:
        values = {"dataset": row.dataset, "backend": row.backend, "job": row.job_id, "status": row.status}
        return [_cell(values[k]) for k in keys]

    for row in rows:
        table.add_row(*key_cells(row), *(_cell(getattr(row, f)) for _h, f in _COLUMNS))
    table.add_section()
    total_label = ["total" if i == 0 else "" for i in range(len(keys))]
    table.add_row(
        *(Text(t, style="bold") for t in total_label), *(_cell(getattr(total, f)) for _h, f in _COLUMNS)
    )
    console.print(table)
    if by is UsageBy.job and total.jobs > len(rows):
        console.print(Text(f"showing the newest {len(rows)} of {total.jobs} jobs (--limit)"))


def workers(
    state: Annotated[
        Optional[list[WorkerState]],  # noqa: UP045
        typer.Option(help="Only workers in this state (repeatable): alive, stale, stopped."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (the API's shape) instead of a table.")
    ] = False,
) -> None:
    """The fleet's workers: alive (heartbeat within 3 intervals), stale (presumed dead) or stopped."""
    settings = get_settings()
    sessions = sessions_for(settings)
    with sessions() as session:
        views = worker_views(session, database_now(session), settings.worker_heartbeat_seconds, states=state)
    if as_json:
        typer.echo(json.dumps([WorkerOut.of(v).model_dump(mode="json") for v in views], indent=2))
        return
    table = Table()
    for column in (
        "worker",
        "kind",
        "host",
        "pid",
        "version",
        "state",
        "heartbeat age s",
        "running",
        "claimed",
    ):
        table.add_column(
            column, justify="right" if column in ("pid", "heartbeat age s", "running", "claimed") else "left"
        )
    styles = {WorkerState.alive: "green", WorkerState.stale: "red", WorkerState.stopped: "dim"}
    for v in views:
        table.add_row(
            Text(v.id),
            Text(v.kind),
            Text(v.hostname),
            Text(str(v.pid)),
            Text(v.version),
            Text(v.state.value, style=styles[v.state]),
            Text(f"{v.heartbeat_age_seconds:.1f}"),
            Text(str(v.running)),
            Text(str(v.claimed)),
        )
    console.print(table)
    counts = {s: sum(1 for v in views if v.state is s) for s in WorkerState}
    console.print(Text(", ".join(f"{n} {s.value}" for s, n in counts.items())))
