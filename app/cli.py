"""The `sprout` command line: everything the service does, from a shell."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from app.config import Settings, get_settings
from app.core.seed_formats import SeedFormatError, parse_seed_file
from app.datasets import NotFoundError, get_dataset_by_name, get_or_create_dataset, import_seeds
from app.db import create_db_engine, make_session_factory, run_migrations, transaction
from app.generation.backends import BackendPool
from app.generation.jobs import claim_next_job, get_job, queue_job
from app.generation.params import GenerationParams, LLMOverrides
from app.generation.pipeline import LEASE, GenerationRunner
from app.items import ItemFilter, list_items
from app.jobs.worker import new_worker_id
from app.models import GenerationJob, ItemStatus, JobStatus

app = typer.Typer(
    help="Sprout: grow instruction-tuning datasets from a few seed tasks.", no_args_is_help=True
)
items_app = typer.Typer(help="Look at generated items.", no_args_is_help=True)
app.add_typer(items_app, name="items")

console = Console()
err = Console(stderr=True)


def _sessions(settings: Settings):  # noqa: ANN202 (sessionmaker)
    run_migrations(settings.database_url)
    return make_session_factory(create_db_engine(settings.database_url))


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (the service and every command also do it on start)."""
    settings = get_settings()
    run_migrations(settings.database_url)
    console.print(f"database is up to date: {settings.database_url}")


@app.command("import-seeds")
def import_seeds_command(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Seed file to import.")
    ],
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="Dataset name (created if missing).")
    ] = "default",
    format: Annotated[str, typer.Option(help="auto, self_instruct, alpaca or csv.")] = "auto",
) -> None:
    """Import seed tasks (Self-Instruct JSONL, Alpaca JSON, CSV). A malformed file imports nothing."""
    if format not in ("auto", "self_instruct", "alpaca", "csv"):
        raise _fail(f"--format: unknown format {format!r} (auto, self_instruct, alpaca, csv)")
    try:
        tasks = parse_seed_file(file.read_bytes(), filename=file.name, format=format)  # type: ignore[arg-type]
    except SeedFormatError as exc:
        raise _fail(f"{file}: {exc}; nothing was imported") from exc
    sessions = _sessions(get_settings())
    with transaction(sessions) as session:
        target = get_or_create_dataset(session, dataset)
        result = import_seeds(session, target, tasks, source=file.name)
    console.print(
        f"dataset [bold]{dataset}[/]: imported {result.imported} seed tasks, "
        f"skipped {result.skipped_existing} already present, {result.total_seeds} in all"
    )


@app.command()
def generate(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name.")] = "default",
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Items to accept.")] = 10,
    seeds: Annotated[Optional[Path], typer.Option(help="Import this seed file first.")] = None,  # noqa: UP045
    backend: Annotated[Optional[str], typer.Option(help="llamacpp, openai_compat or fake.")] = None,  # noqa: UP045
    model: Annotated[Optional[str], typer.Option(help="Model name on the server.")] = None,  # noqa: UP045
    base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible API root.")] = None,  # noqa: UP045
    mode: Annotated[Optional[str], typer.Option(help="chat or completions.")] = None,  # noqa: UP045
    tasks_per_prompt: Annotated[int, typer.Option(min=1, max=50)] = 5,
    max_prompts: Annotated[Optional[int], typer.Option(min=1, help="Prompt budget.")] = None,  # noqa: UP045
    language: Annotated[str, typer.Option(help="auto, en or zh.")] = "auto",
    temperature: Annotated[Optional[float], typer.Option(min=0.0, max=2.0)] = None,  # noqa: UP045
    max_tokens: Annotated[Optional[int], typer.Option(min=16)] = None,  # noqa: UP045
    seed: Annotated[Optional[int], typer.Option(help="Random seed for reproducible sampling.")] = None,  # noqa: UP045
) -> None:
    """Generate items in the foreground, with a progress bar and a summary table."""
    settings = get_settings()
    try:
        overrides = LLMOverrides.model_validate(
            {
                k: v
                for k, v in {"backend": backend, "model": model, "base_url": base_url, "mode": mode}.items()
                if v
            }
        )
        params = GenerationParams(
            count=count,
            tasks_per_prompt=tasks_per_prompt,
            max_prompts=max_prompts,
            language=language,  # type: ignore[arg-type]
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            llm=overrides if overrides.model_fields_set else None,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    if seeds is not None:
        import_seeds_command(seeds, dataset=dataset)
    sessions = _sessions(settings)
    worker_id = new_worker_id()
    try:
        with transaction(sessions) as session:
            job_id = queue_job(session, get_dataset_by_name(session, dataset).id, params).id
        with transaction(sessions) as session:
            # Claim this very job (the oldest queued one might belong to a running service).
            claimed = claim_next_job(session, worker_id, LEASE, job_id=job_id)
    except (NotFoundError, ValueError) as exc:
        raise _fail(f"{exc} (import seeds with `sprout import-seeds FILE --dataset {dataset}`)") from exc
    if claimed is None:
        raise _fail(f"generation job {job_id} was taken by another worker")
    status = asyncio.run(_run_with_progress(sessions, settings, job_id, worker_id, count))
    with sessions() as session:
        _print_summary(get_job(session, job_id))
    if status != JobStatus.succeeded:
        raise typer.Exit(1)


async def _run_with_progress(
    sessions, settings: Settings, job_id: int, worker_id: str, count: int
) -> JobStatus:  # noqa: ANN001
    backends = BackendPool()
    runner = GenerationRunner(sessions, settings, backends)
    columns = (
        TextColumn("[bold]generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("accepted · {task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        bar = progress.add_task("generate", total=count, detail="loading the model")

        def on_progress(c: dict[str, object]) -> None:
            filtered = sum((c["filtered"] or {}).values())  # type: ignore[union-attr]
            detail = f"{c['prompts']} prompts, {c['parsed']} parsed, {filtered} filtered, {c['duplicates']} duplicates"
            progress.update(bar, completed=min(int(c["accepted"]), count), detail=detail)  # type: ignore[arg-type]

        try:
            return await runner.run(job_id, worker_id=worker_id, on_progress=on_progress)
        finally:
            await backends.aclose()


def _print_summary(job: GenerationJob) -> None:
    console.print(f"[bold]generation job {job.id}: {job.status.value}[/]")
    table = Table(show_header=False)
    table.add_row("requested", str(job.requested))
    table.add_row("prompts sent", str(job.prompts))
    table.add_row("raw chunks", str(job.raw))
    table.add_row("parsed", str(job.parsed))
    for reason, n in sorted((job.filtered or {}).items()):
        table.add_row(f"filtered: {reason}", str(n))
    table.add_row("near-duplicates", str(job.duplicates))
    table.add_row("[bold]accepted[/]", f"[bold]{job.accepted}[/]")
    console.print(table)
    if job.message:
        console.print(job.message)
    if job.error:
        err.print(f"[bold red]error:[/] {job.error}", highlight=False)


@items_app.command("list")
def items_list(
    dataset: Annotated[str, typer.Option("--dataset", "-d")] = "default",
    status: Annotated[
        Optional[ItemStatus], typer.Option(help="pending, approved, rejected or filtered.")
    ] = None,  # noqa: UP045
    reason: Annotated[Optional[str], typer.Option(help="Only items filtered for this reason.")] = None,  # noqa: UP045
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List items of a dataset."""
    sessions = _sessions(get_settings())
    with sessions() as session:
        try:
            dataset_id = get_dataset_by_name(session, dataset).id
        except NotFoundError as exc:
            raise _fail(str(exc)) from exc
        rows, total = list_items(
            session, dataset_id, ItemFilter(status=status, filter_reason=reason), limit=limit, offset=offset
        )
    if as_json:
        for item in rows:
            record = {k: getattr(item, k) for k in ("id", "instruction", "input", "output", "filter_reason")}
            record["status"] = item.status.value
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"{dataset}: {len(rows)} of {total} items")
    for column in ("id", "status", "instruction", "input", "output", "reason"):
        table.add_column(column, overflow="fold")
    for item in rows:
        reason_text = item.filter_reason or ""
        if item.duplicate_signal:
            reason_text += f" ({item.duplicate_signal} {item.nearest_rouge_l or 0:.2f})"
        # Model output is untrusted: Text() shows it verbatim, never as rich markup.
        cells = (item.instruction, item.input, item.output, reason_text)
        table.add_row(str(item.id), item.status.value, *(Text(c) for c in cells))
    console.print(table)


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    bootstrap: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option("--bootstrap/--no-bootstrap", help="Import the default seeds and queue a first job."),
    ] = None,
) -> None:
    """Run the HTTP service (API docs at /docs) with its background worker."""
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    if bootstrap is None:
        bootstrap = settings.bootstrap
    sessions = _sessions(settings)
    base = f"http://{host}:{port}"
    if bootstrap:
        job_id = _bootstrap(sessions, settings)
        console.print(f"[bold green]Sprout[/] is starting with dataset [bold]{settings.default_dataset}[/].")
        console.print(f"  first generation job: {base}/v1/generations/{job_id}")
    console.print(f"  API docs:  {base}/docs")
    console.print(f"  datasets:  {base}/v1/datasets")
    console.print(f"  items:     {base}/v1/datasets/1/items?status=pending")
    console.print(f"  health:    {base}/healthz")
    console.print(
        f"  from a shell: {_sprout_command()} generate --dataset {settings.default_dataset} --count 10"
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def _sprout_command() -> str:
    """How this shell reached `sprout` (e.g. .venv/bin/sprout), so the printed hint can be pasted as is."""
    invoked = Path(sys.argv[0])
    return str(invoked) if invoked.name == "sprout" and invoked.parent != Path(".") else "sprout"


def _bootstrap(sessions, settings: Settings) -> int:  # noqa: ANN001
    """Default dataset with the project's seeds, and a first job unless one is already waiting or running."""
    tasks = parse_seed_file(settings.default_seeds.read_bytes(), filename=settings.default_seeds.name)
    with transaction(sessions) as session:
        dataset = get_or_create_dataset(session, settings.default_dataset)
        result = import_seeds(session, dataset, tasks, source=settings.default_seeds.name)
        active = session.scalar(
            select(GenerationJob.id).where(
                GenerationJob.dataset_id == dataset.id,
                GenerationJob.status.in_([JobStatus.queued, JobStatus.running]),
            )
        )
        job_id = active or queue_job(session, dataset.id, GenerationParams(count=settings.bootstrap_count)).id
    console.print(
        f"  seeds: {result.imported} imported, {result.total_seeds} in dataset {settings.default_dataset!r}"
    )
    return job_id


def _register_optional_commands() -> None:
    from app.cli_dedup import dedup

    app.command("dedup")(dedup)


_register_optional_commands()


if __name__ == "__main__":
    app()
