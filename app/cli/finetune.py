"""`sprout finetune`: fine-tuning jobs from a shell. `create` snapshots a dataset's approved items and queues a
job on them; with `--wait` (the default) it also runs the job here, with a progress bar over training steps, as
the service's worker would (a running `sprout serve` may claim it first: then it is watched instead)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.cli.common import console, fail, plain, sessions_for
from app.core.config import DEFAULT_MODEL_NAME, Settings, get_settings
from app.core.db import transaction
from app.core.errors import ConflictError, InvalidFieldError, NotFoundError
from app.datasets.service import get_dataset_by_name
from app.finetune import service
from app.finetune.errors import FieldError
from app.finetune.models import FineTuneEvent, FineTuneJob
from app.finetune.runner import FinetuneRunner
from app.finetune.schemas import Hyperparameters, JobCreate, api_status
from app.finetune.snapshots import EmptyExportError, create_snapshot
from app.jobs.queue import claim_next
from app.jobs.worker import new_worker_id

app = typer.Typer(help="Fine-tuning jobs (LoRA on the approved items).", no_args_is_help=True)


@app.command("create")
def create(
    dataset: Annotated[str, typer.Argument(help="Dataset name: its approved items, as a snapshot.")],
    model: Annotated[str, typer.Option(help="A configured base model.")] = DEFAULT_MODEL_NAME,
    epochs: Annotated[Optional[int], typer.Option(min=1, max=50, help="Default: auto.")] = None,  # noqa: UP045
    batch_size: Annotated[Optional[int], typer.Option(min=1, max=256, help="Default: auto.")] = None,  # noqa: UP045
    suffix: Annotated[Optional[str], typer.Option(help="Up to 18 characters, in the model's name.")] = None,  # noqa: UP045
    validation_fraction: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.1,
    seed: Annotated[Optional[int], typer.Option(min=0, max=2**31 - 1)] = None,  # noqa: UP045
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Run the job here until it ends.")] = True,
) -> None:
    """Snapshot DATASET's approved items and fine-tune MODEL on them."""
    settings = get_settings()
    sessions = sessions_for(settings)
    try:
        hyperparameters = Hyperparameters(n_epochs=epochs or "auto", batch_size=batch_size or "auto")
        with transaction(sessions) as session:
            dataset_id = get_dataset_by_name(session, dataset).id
            snapshot = create_snapshot(
                session,
                dataset_id,
                created_by="cli",
                seed=seed,
                validation_fraction=validation_fraction,
                settings=settings,
            )
            files = service.file_ids(session, [snapshot])
            body = JobCreate(
                model=model,
                training_file=files[snapshot.training_file_id],
                validation_file=files.get(snapshot.validation_file_id)
                if snapshot.validation_file_id
                else None,
                hyperparameters=hyperparameters,
                suffix=suffix,
                seed=seed,
            )
            job = service.create_job(
                session, body, settings, "cli", dataset_id=dataset_id, snapshot_id=snapshot.id
            )
            public_id = job.public_id
    except FieldError as exc:
        raise fail(f"--{exc.param.replace('_', '-')}: {exc.message}") from exc
    except (NotFoundError, EmptyExportError, InvalidFieldError, ValueError) as exc:
        raise fail(str(exc)) from exc
    console.print(
        plain(
            "queued ",
            (public_id, "bold"),
            f" on snapshot {snapshot.id} ({snapshot.train} train, {snapshot.validation} validation)",
        )
    )
    if wait:
        asyncio.run(_run_here(sessions, settings, public_id))
        show(public_id, events=5)


async def _run_here(sessions: sessionmaker[Session], settings: Settings, public_id: str) -> None:
    runner = FinetuneRunner(sessions, settings)
    worker = new_worker_id()
    with sessions() as session:
        job_id = service.get_job(session, public_id).id

    def claim(validated: bool):  # noqa: ANN202
        with transaction(sessions) as session:
            return claim_next(
                session,
                FineTuneJob,
                worker,
                settings.job_lease_seconds,
                job_id=job_id,
                where=[FineTuneJob.files_validated.is_(validated)],
            )

    async def run() -> None:
        for validated, step in ((False, runner.validate), (True, runner.train)):
            found = await asyncio.to_thread(claim, validated)
            if found is not None:
                await step(found)

    task = asyncio.create_task(run())
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("validating files", total=None)
        while True:
            job, last = await asyncio.to_thread(_state, sessions, job_id)
            if last is not None:
                progress.update(
                    bar,
                    description=f"training (loss {last.get('train_loss', float('nan')):.3f})",
                    completed=last.get("step", 0),
                    total=last.get("total_steps"),
                )
            elif api_status(job) != "validating_files":
                progress.update(bar, description=api_status(job))
            if job.status.is_final:
                break
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            await asyncio.sleep(1.0)
    await task


def _state(sessions: sessionmaker[Session], job_id: int) -> tuple[FineTuneJob, dict | None]:
    with sessions() as session:
        job = session.get(FineTuneJob, job_id)
        last = session.scalar(
            select(FineTuneEvent.data)
            .where(FineTuneEvent.job_id == job_id, FineTuneEvent.type == "metrics")
            .order_by(FineTuneEvent.id.desc())
            .limit(1)
        )
        session.expunge(job)
        return job, last


@app.command("list")
def list_jobs(limit: Annotated[int, typer.Option(min=1, max=100)] = 20) -> None:
    """Fine-tuning jobs, newest first."""
    sessions = sessions_for(get_settings())
    with sessions() as session:
        jobs, _ = service.list_jobs(session, None, limit)
    table = Table("id", "status", "model", "fine-tuned model", "tokens", "created")
    for job in jobs:
        table.add_row(
            job.public_id,
            api_status(job),
            job.model,
            job.fine_tuned_model or "",
            str(job.trained_tokens or ""),
            job.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="ftjob-...")],
    events: Annotated[int, typer.Option(min=0, max=100, help="Latest events to show.")] = 10,
) -> None:
    """One job: status, model, error, evaluation and its latest events."""
    sessions = sessions_for(get_settings())
    try:
        with sessions() as session:
            job = service.get_job(session, job_id)
            latest, _ = service.list_events(session, job, None, events)
    except NotFoundError as exc:
        raise fail(str(exc)) from exc
    console.print(
        plain((job.public_id, "bold"), f"  {api_status(job)}  ", job.model, "  ", job.fine_tuned_model or "")
    )
    if job.error:
        console.print(plain(("error: ", "red"), f"[{job.error_code}] ", job.error))
    evaluation = job.evaluation or {}
    if "valid_loss_before" in evaluation:
        console.print(
            f"validation loss: {evaluation['valid_loss_before']} -> {evaluation['valid_loss_after']}"
        )
    for event in reversed(latest):
        console.print(
            plain(event.created_at.strftime("%H:%M:%S "), (f"{event.level:5} ", "dim"), event.message)
        )


@app.command("cancel")
def cancel(job_id: Annotated[str, typer.Argument(help="ftjob-...")]) -> None:
    """Cancel a job: a queued one at once, a running one within seconds."""
    sessions = sessions_for(get_settings())
    try:
        with transaction(sessions) as session:
            job = service.cancel_job(session, job_id)
            status = api_status(job)
    except (NotFoundError, ConflictError) as exc:
        raise fail(str(exc)) from exc
    console.print(plain(job_id, f": {status}"))
