"""`sprout jobs`: generation and fine-tuning jobs in one table, newest first (the listing behind GET /v1/jobs),
with their progress; `--watch` redraws it every few seconds until interrupted. Names, messages and errors are
printed as plain text, never as rich markup."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from app.cli.common import console, fail, sessions_for
from app.core.config import get_settings
from app.core.errors import InvalidFieldError, NotFoundError
from app.datasets.service import get_dataset_by_name
from app.jobs.listing import MAX_LIMIT, JobFilter, list_jobs, parse_kinds, parse_statuses
from app.jobs.schemas import JobRow

STATUS_STYLES = {
    "queued": "blue",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "dim",
}


def jobs(
    active: Annotated[bool, typer.Option("--active", help="Only queued or running jobs.")] = False,
    kind: Annotated[
        Optional[str],  # noqa: UP045 (typer reads the annotation)
        typer.Option(help="generation or fine_tune."),
    ] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Only this dataset's jobs (its name).")] = None,  # noqa: UP045
    status: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="queued, running, succeeded, failed or cancelled (repeat it, or a comma list)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIMIT, help="Rows shown.")] = 30,
    watch: Annotated[bool, typer.Option("--watch", help="Redraw until interrupted (Ctrl-C).")] = False,
    interval: Annotated[float, typer.Option(min=0.2, max=3600, help="Seconds between redraws.")] = 2.0,
) -> None:
    """Jobs of every kind, newest first, with their progress, attempt, worker and tokens."""
    sessions = sessions_for(get_settings())
    try:
        dataset_id = None
        if dataset is not None:
            with sessions() as session:
                dataset_id = get_dataset_by_name(session, dataset).id
        where = JobFilter(
            kinds=parse_kinds(kind),
            statuses=parse_statuses(status),
            dataset_id=dataset_id,
            active=True if active else None,
        )
    except InvalidFieldError as exc:
        raise fail(f"--{exc.field.replace('_', '-')}: {exc.message}") from exc
    except NotFoundError as exc:
        raise fail(str(exc)) from exc

    def view() -> Group:
        with sessions() as session:
            rows, more = list_jobs(session, where, limit=limit)
        return render(rows, more is not None, watching=watch)

    if not watch:
        console.print(view())
        return
    try:  # on a terminal the table is redrawn in place; piped, the last one is printed when it stops
        with Live(Text("loading…"), console=console, auto_refresh=False) as live:
            while True:
                live.update(view(), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


def render(rows: list[JobRow], more: bool, *, watching: bool = False) -> Group:
    table = Table(box=None, pad_edge=False)
    table.add_column("job", no_wrap=True)
    table.add_column("dataset")
    table.add_column("status", no_wrap=True)
    table.add_column("progress")
    table.add_column("")
    table.add_column("attempt", justify="right")
    table.add_column("worker")
    for header in ("tokens", "busy"):
        table.add_column(header, justify="right")
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("message", overflow="fold")
    for row in rows:
        table.add_row(
            Text((row.public_id or "") if row.kind == "fine_tune" else f"gen #{row.id}"),
            Text(row.dataset.name if row.dataset else ""),
            _status(row),
            ProgressBar(total=row.progress.total, completed=row.progress.done, width=16)
            if row.progress
            else Text(""),
            Text(_figures(row)),
            Text(str(row.attempt)),
            Text(row.worker_id or ""),
            Text(f"{row.tokens.total:,}" if row.tokens.total else ""),
            Text(_duration(row.busy_seconds)),
            Text(row.created_at.strftime("%m-%d %H:%M:%S")),
            Text(row.error or row.message or "", style="red" if row.error else ""),
        )
    lines: list[Table | Text] = [table]
    if not rows:
        lines = [Text("no jobs match", style="dim")]
    footer = []
    if more:
        footer.append("more jobs match: raise --limit or narrow the filters")
    if watching:
        footer.append(f"updated {time.strftime('%H:%M:%S')} · Ctrl-C to stop")
    if footer:
        lines.append(Text(" · ".join(footer), style="dim"))
    return Group(*lines)


def _status(row: JobRow) -> Text:
    text = Text(row.status.value, style=STATUS_STYLES.get(row.status.value, ""))
    if row.stage and row.stage != row.status.value:
        text.append(f" ({row.stage})", style="dim")
    if row.cancel_requested and not row.status.is_final:
        text.append(" cancel requested", style="dim")
    if row.not_before is not None and row.status.value == "queued":
        text.append(f" retry after {row.not_before.strftime('%H:%M:%S')}", style="dim")
    return text


def _figures(row: JobRow) -> str:
    if row.progress is None:
        return "steps not reported yet" if row.kind == "fine_tune" and row.status.value == "running" else ""
    p = row.progress
    unit = "items" if row.kind == "generation" else "steps"
    return f"{p.done:,}/{p.total:,} {unit} {int(p.fraction * 100)}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} m"
