"""Fine-tuning jobs: create (checks what can be checked at once), list, read, cancel, events, checkpoints.

What needs the files' content (roles, assistant turns, lengths in the model's tokens) is checked by the job's
`validating_files` step on a worker (app/finetune/runner.py), as OpenAI does.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import NotFoundError
from app.finetune.errors import FieldError
from app.finetune.files import get_file, new_public_id
from app.finetune.models import FineTuneCheckpoint, FineTuneEvent, FineTuneJob, Snapshot, StoredFile
from app.finetune.schemas import Hyperparameters, JobCreate, JobObject
from app.jobs import queue
from app.jobs.models import JobStatus

MAX_PAGE = 100


def add_event(
    session: Session,
    job_id: int,
    message: str,
    *,
    level: str = "info",
    type_: str = "message",
    data: dict[str, Any] | None = None,
    remote_id: str | None = None,
) -> None:
    session.add(
        FineTuneEvent(job_id=job_id, level=level, type=type_, message=message, data=data, remote_id=remote_id)
    )


def _training_input(session: Session, public_id: str, param: str) -> StoredFile:
    try:
        stored = get_file(session, public_id)
    except NotFoundError as exc:
        raise FieldError(param, f"{param} {public_id!r}: no such file", "invalid_file") from exc
    if stored.purpose != "fine-tune":
        raise FieldError(
            param, f"{param} {public_id!r} has purpose {stored.purpose!r}, not 'fine-tune'", "invalid_file"
        )
    return stored


def create_job(
    session: Session,
    body: JobCreate,
    settings: Settings,
    created_by: str,
    *,
    dataset_id: int | None = None,
    snapshot_id: int | None = None,
) -> FineTuneJob:
    model = settings.finetune_models.get(body.model)
    if model is None:
        names = ", ".join(sorted(settings.finetune_models)) or "none"
        raise FieldError(
            "model",
            f"model {body.model!r} is not configured for fine-tuning (configured: {names})",
            "model_not_available",
        )
    if body.method is not None and body.hyperparameters is not None:
        raise FieldError(
            "hyperparameters", "give hyperparameters or method.supervised.hyperparameters, not both"
        )
    training = _training_input(session, body.training_file, "training_file")
    if training.records < settings.finetune_min_examples:
        raise FieldError(
            "training_file",
            f"training_file {body.training_file} holds {training.records} example(s); "
            f"at least {settings.finetune_min_examples} are needed",
            "invalid_n_examples",
        )
    validation = (
        _training_input(session, body.validation_file, "validation_file") if body.validation_file else None
    )
    job = FineTuneJob(
        public_id=new_public_id("ftjob"),
        model=body.model,
        trainer=model.trainer,
        training_file_id=training.id,
        validation_file_id=validation.id if validation else None,
        hyperparameters=body.chosen_hyperparameters().model_dump(),
        suffix=body.suffix or None,
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        meta=body.metadata,
        created_by=created_by,
        dataset_id=dataset_id,
        snapshot_id=snapshot_id,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, f"Created fine-tuning job: {job.public_id}")
    add_event(session, job.id, f"Validating training file: {training.public_id}")
    return job


def resolve_hyperparameters(asked: dict[str, Any], examples: int, learning_rate: float) -> dict[str, Any]:
    """Numbers for every "auto": 3 epochs (more for small sets, so a job sees at least ~100 examples), a batch
    that grows with the data up to 8, multiplier 1. The learning rate is the base model's LoRA rate times it."""
    hp = Hyperparameters.model_validate(asked)
    n_epochs = hp.n_epochs if hp.n_epochs != "auto" else min(10, max(3, math.ceil(100 / max(examples, 1))))
    batch_size = hp.batch_size if hp.batch_size != "auto" else min(8, max(1, examples // 64))
    multiplier = hp.learning_rate_multiplier if hp.learning_rate_multiplier != "auto" else 1.0
    return {
        "n_epochs": int(n_epochs),
        "batch_size": int(batch_size),
        "learning_rate_multiplier": float(multiplier),
        "learning_rate": learning_rate * float(multiplier),
    }


def get_job(session: Session, public_id: str) -> FineTuneJob:
    job = session.scalar(select(FineTuneJob).where(FineTuneJob.public_id == public_id))
    if job is None:
        raise NotFoundError(f"no fine-tuning job {public_id!r}")
    return job


def file_ids(session: Session, owners: Sequence[FineTuneJob | Snapshot]) -> dict[int, str]:
    """Public ids of the files that jobs or snapshots point at, by row id."""
    wanted = {o.training_file_id for o in owners} | {
        o.validation_file_id for o in owners if o.validation_file_id
    }
    if not wanted:
        return {}
    rows = session.execute(select(StoredFile.id, StoredFile.public_id).where(StoredFile.id.in_(wanted)))
    return {row.id: row.public_id for row in rows}


def job_object(session: Session, job: FineTuneJob) -> JobObject:
    return JobObject.of(job, file_ids(session, [job]))


def list_jobs(session: Session, after: str | None, limit: int) -> tuple[list[FineTuneJob], bool]:
    """Newest first; `after` is the last job id of the previous page."""
    query = select(FineTuneJob).order_by(FineTuneJob.id.desc())
    if after:
        query = query.where(FineTuneJob.id < get_job(session, after).id)
    jobs = list(session.scalars(query.limit(limit + 1)))
    return jobs[:limit], len(jobs) > limit


def cancel_job(session: Session, public_id: str) -> FineTuneJob:
    """A queued job is cancelled at once; a running one is asked to stop (its runner stops the trainer).
    ConflictError once the job is final."""
    job = get_job(session, public_id)
    status = queue.request_cancel(session, FineTuneJob, job.id)
    if status == JobStatus.cancelled:
        add_event(session, job.id, "Fine-tuning job cancelled before it started")
    else:
        add_event(session, job.id, "Cancel requested: stopping the trainer")
    session.refresh(job)
    return job


def list_events(
    session: Session, job: FineTuneJob, after: str | None, limit: int
) -> tuple[list[FineTuneEvent], bool]:
    """Newest first; `after` is an event id (`ftevent-N`) of the previous page."""
    query = select(FineTuneEvent).where(FineTuneEvent.job_id == job.id).order_by(FineTuneEvent.id.desc())
    if after:
        query = query.where(FineTuneEvent.id < _number(after, "ftevent-", "after"))
    events = list(session.scalars(query.limit(limit + 1)))
    return events[:limit], len(events) > limit


def list_checkpoints(
    session: Session, job: FineTuneJob, after: str | None, limit: int
) -> tuple[list[FineTuneCheckpoint], bool]:
    """Newest first, as OpenAI lists them."""
    query = (
        select(FineTuneCheckpoint)
        .where(FineTuneCheckpoint.job_id == job.id)
        .order_by(FineTuneCheckpoint.id.desc())
    )
    if after:
        query = query.where(FineTuneCheckpoint.id < _number(after, "ftckpt-", "after"))
    found = list(session.scalars(query.limit(limit + 1)))
    return found[:limit], len(found) > limit


def _number(public_id: str, prefix: str, param: str) -> int:
    digits = public_id.removeprefix(prefix)
    if not public_id.startswith(prefix) or not digits.isdigit() or len(digits) > 18:
        raise FieldError(param, f"{param} {public_id!r} is not an id of the form {prefix}N")
    return int(digits)
