"""`sprout generate`: a generation job in the foreground, with a progress bar; `--dry-run` shows one request."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.orm import Session, sessionmaker

from app.cli.common import console, err, fail, plain, sessions_for
from app.cli.seeds import import_seeds_command
from app.core.config import Settings, get_settings
from app.core.db import transaction
from app.core.errors import ConflictError, InvalidFieldError, NotFoundError
from app.datasets.service import get_dataset_by_name
from app.generation.models import GenerationJob
from app.generation.params import GenerationParams
from app.generation.pipeline.preview import Preview, preview_generation
from app.generation.pipeline.runner import GenerationRunner
from app.generation.service import get_job, queue_job
from app.jobs.models import JobStatus
from app.jobs.queue import claim_next
from app.jobs.worker import new_worker_id
from app.llm.registry import BackendRegistry


def generate(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name.")] = "default",
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Items to accept.")] = 10,
    seeds: Annotated[Optional[Path], typer.Option(help="Import this seed file first.")] = None,  # noqa: UP045
    backend: Annotated[
        Optional[str], typer.Option(help="A configured backend (see `sprout backends list`).")
    ] = None,  # noqa: UP045
    tasks_per_prompt: Annotated[Optional[int], typer.Option(min=1, max=50)] = None,  # noqa: UP045
    choices: Annotated[int, typer.Option("--choices", min=1, max=16, help="Choices per prompt (n).")] = 1,
    max_prompts: Annotated[Optional[int], typer.Option(min=1, help="Prompt budget.")] = None,  # noqa: UP045
    language: Annotated[str, typer.Option(help="auto, en or zh.")] = "auto",
    temperature: Annotated[Optional[float], typer.Option(min=0.0, max=2.0)] = None,  # noqa: UP045
    max_tokens: Annotated[Optional[int], typer.Option(min=16)] = None,  # noqa: UP045
    seed: Annotated[Optional[int], typer.Option(min=0, help="Random seed for reproducible sampling.")] = None,  # noqa: UP045
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Send one request and show what became of it; store nothing.")
    ] = False,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue", help="Only queue the job for the workers (`sprout worker`) and print its id."
        ),
    ] = False,
    priority: Annotated[int, typer.Option(min=-100, max=100, help="Queue order: higher first.")] = 0,
) -> None:
    """Generate items in the foreground, with a progress bar and a summary table."""
    settings = get_settings()
    try:
        params = GenerationParams(
            count=count,
            backend=backend,
            tasks_per_prompt=tasks_per_prompt,
            n=choices,
            max_prompts=max_prompts,
            language=language,  # type: ignore[arg-type]
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            priority=priority,
        )
    except ValidationError as exc:
        raise fail(
            "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        ) from exc
    if seeds is not None and not dry_run:
        import_seeds_command(seeds, dataset=dataset)
    sessions = sessions_for(settings)
    registry = BackendRegistry.from_settings(settings)
    try:
        with sessions() as session:
            dataset_id = get_dataset_by_name(session, dataset).id
        if dry_run:
            result = asyncio.run(_preview(sessions, settings, registry, dataset_id, params))
            _print_preview(result)
            return
        worker_id = new_worker_id()
        with transaction(sessions) as session:
            job_id = queue_job(session, dataset_id, params, settings, registry).id
        if queue:
            console.print(plain(f"queued generation job {job_id} (priority {priority}) in dataset ", dataset))
            return
        with transaction(sessions) as session:
            # Claim this very job (the oldest queued one might belong to a running service).
            claim = claim_next(session, GenerationJob, worker_id, settings.job_lease_seconds, job_id=job_id)
    except InvalidFieldError as exc:
        raise fail(f"--{exc.field}: {exc.message}") from exc
    except (NotFoundError, ConflictError) as exc:
        raise fail(f"{exc} (import seeds with `sprout import-seeds FILE --dataset {dataset}`)") from exc
    if claim is None:
        raise fail(f"generation job {job_id} was taken by another worker")
    status = asyncio.run(_run_with_progress(sessions, settings, registry, claim, count))
    with sessions() as session:
        _print_summary(get_job(session, job_id))
    if status != JobStatus.succeeded:
        raise typer.Exit(1)


async def _preview(
    sessions: sessionmaker[Session],
    settings: Settings,
    registry: BackendRegistry,
    dataset_id: int,
    params: GenerationParams,
) -> Preview:
    try:
        return await preview_generation(sessions, settings, registry, dataset_id, params)
    finally:
        await registry.aclose()


async def _run_with_progress(
    sessions: sessionmaker[Session], settings: Settings, registry: BackendRegistry, claim: Any, count: int
) -> JobStatus | None:
    runner = GenerationRunner(sessions, settings, registry)
    columns = (
        TextColumn("[bold]generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("accepted · {task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        bar = progress.add_task("generate", total=count, detail="starting")

        def on_progress(c: dict[str, Any]) -> None:
            filtered = sum(c["filtered"].values())
            detail = (
                f"{c['requests']} requests, {c['parsed']} parsed, {filtered} filtered, "
                f"{c['duplicates']} duplicates, {c['errors']} errors"
            )
            progress.update(bar, completed=min(int(c["accepted"]), count), detail=detail)

        try:
            return await runner.run(claim, on_progress=on_progress)
        finally:
            await registry.aclose()


def _print_summary(job: GenerationJob) -> None:
    console.print(plain((f"generation job {job.id}: {job.status.value}", "bold")))
    table = Table(show_header=False)
    rows = [
        ("backend", job.backend),
        ("requested", str(job.requested)),
        ("requests", str(job.requests)),
        ("prompts sent", str(job.prompts)),
        ("raw chunks", str(job.raw)),
        ("parsed", str(job.parsed)),
        *((f"filtered: {reason}", str(n)) for reason, n in sorted((job.filtered or {}).items())),
        ("near-duplicates", str(job.duplicates)),
        ("errors", str(job.errors)),
    ]
    for label, value in rows:
        table.add_row(Text(label), Text(value))
    table.add_row(Text("accepted", style="bold"), Text(str(job.accepted), style="bold"))
    console.print(table)
    if job.message:
        console.print(Text(job.message))
    if job.error:
        err.print(Text.assemble(("error: ", "bold red"), job.error))
    elif job.last_error:
        err.print(Text.assemble(("last request error: ", "yellow"), job.last_error))


def _print_preview(result: Preview) -> None:
    request = result.request
    console.print(
        plain(("dry run", "bold"), f" · backend {result.backend} · {result.mode} mode · nothing stored")
    )
    if "messages" in request:
        for message in request["messages"]:
            console.print(
                Panel(Text(message["content"]), title=Text(f"prompt: {message['role']}"), title_align="left")
            )
    else:
        for i, prompt in enumerate(request["prompts"]):
            console.print(Panel(Text(prompt), title=Text(f"prompt {i}"), title_align="left"))
    console.print(plain("sampling: ", json.dumps(request["sampling"], ensure_ascii=False)))
    screened = result.screened
    for i, choice in enumerate(screened.choices):
        text = choice["text"] if choice["text"] is not None else "(no text)"
        title = f"reply {i}: finish_reason={choice['finish_reason']}, {choice['items']} parsed, {choice['unparsed']} unparsed"
        console.print(Panel(Text(text), title=Text(title), title_align="left"))
    if screened.error:
        err.print(Text.assemble(("request error: ", "bold red"), screened.error))
    table = Table(title=Text(f"{len(result.candidates)} candidate(s)"))
    for column in ("verdict", "instruction", "reason", "nearest"):
        table.add_column(column, overflow="fold")
    for c in result.candidates:
        nearest = ""
        if c["nearest"] is not None:
            nearest = f"{c['nearest']['kind']} {c['nearest']['id'] or ''} (ROUGE-L {c['nearest']['rouge_l'] or 0:.2f}): {c['nearest_text'] or ''}"
        reason = c["filter_reason"] or ""
        if c["duplicate_signal"]:
            reason += f" ({c['duplicate_signal']})"
        table.add_row(Text(c["verdict"]), Text(c["instruction"]), Text(reason), Text(nearest))
    console.print(table)
