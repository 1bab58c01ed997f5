"""Generation jobs as stored rows: queue, look up, list, cancel, and claim for a worker."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.datasets import ConflictError, NotFoundError, get_dataset
from app.generation.params import GenerationParams
from app.models import GenerationJob, JobStatus, SeedTask, utcnow


def queue_job(session: Session, dataset_id: int, params: GenerationParams) -> GenerationJob:
    get_dataset(session, dataset_id)
    if session.scalar(select(SeedTask.id).where(SeedTask.dataset_id == dataset_id).limit(1)) is None:
        raise ConflictError(f"dataset {dataset_id} has no seed tasks yet: import seeds before generating")
    job = GenerationJob(
        dataset_id=dataset_id,
        params=params.model_dump(mode="json", exclude_none=True),
        status=JobStatus.queued,
        requested=params.count,
        filtered={},
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: int) -> GenerationJob:
    job = session.get(GenerationJob, job_id)
    if job is None:
        raise NotFoundError(f"generation job {job_id} not found")
    return job


def list_jobs(session: Session, dataset_id: int, *, limit: int, offset: int) -> list[GenerationJob]:
    query = (
        select(GenerationJob)
        .where(GenerationJob.dataset_id == dataset_id)
        .order_by(GenerationJob.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query))


def request_cancel(session: Session, job_id: int) -> GenerationJob:
    """A queued job is cancelled at once; a running one stops after the batch in flight (its items are kept)."""
    job = get_job(session, job_id)
    if job.status == JobStatus.queued:
        job.status = JobStatus.cancelled
        job.finished_at = utcnow()
        job.message = "cancelled before it started"
    elif job.status == JobStatus.running:
        job.cancel_requested = True
    else:
        raise ConflictError(f"generation job {job_id} is already {job.status.value}")
    session.flush()
    return job


def claim_next_job(
    session: Session, worker_id: str, lease: timedelta, *, job_id: int | None = None
) -> int | None:
    """Take the oldest queued job (or the given one). The conditional UPDATE makes a double claim impossible."""
    query = select(GenerationJob.id).where(GenerationJob.status == JobStatus.queued)
    if job_id is not None:
        query = query.where(GenerationJob.id == job_id)
    for job_id in session.scalars(query.order_by(GenerationJob.id).limit(5)):
        claimed = session.execute(
            update(GenerationJob)
            .where(GenerationJob.id == job_id, GenerationJob.status == JobStatus.queued)
            .values(
                status=JobStatus.running,
                worker_id=worker_id,
                lease_until=utcnow() + lease,
                started_at=utcnow(),
                attempt=GenerationJob.attempt + 1,
            )
        )
        if claimed.rowcount == 1:
            return job_id
    return None


def renew_lease(session: Session, job_id: int, worker_id: str, lease: timedelta) -> bool:
    """Extend a running job's lease; False when the job is no longer this worker's."""
    result = session.execute(
        update(GenerationJob)
        .where(GenerationJob.id == job_id, GenerationJob.worker_id == worker_id)
        .where(GenerationJob.status == JobStatus.running)
        .values(lease_until=utcnow() + lease)
    )
    return result.rowcount == 1


def requeue_expired_jobs(session: Session) -> int:
    """Running jobs whose worker stopped renewing its lease (a crash, a restart) go back to the queue.

    They resume from their stored counters: the items already kept stay, nothing is generated twice.
    """
    result = session.execute(
        update(GenerationJob)
        .where(GenerationJob.status == JobStatus.running, GenerationJob.lease_until < utcnow())
        .values(status=JobStatus.queued, worker_id=None, lease_until=None)
    )
    return result.rowcount or 0
