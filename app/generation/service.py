"""Generation jobs, their replies and their items, as stored rows: queue, look up, list, cancel, count."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import ConflictError, NotFoundError
from app.datasets.service import get_dataset, has_seeds
from app.finetune.serving import check_adapter
from app.generation.models import GenerationJob, GenerationReply, Item, ItemCount, ItemStatus
from app.generation.params import GenerationParams
from app.jobs import queue
from app.jobs.models import JobStatus
from app.llm.registry import BackendRegistry


def queue_job(
    session: Session, dataset_id: int, params: GenerationParams, settings: Settings, registry: BackendRegistry
) -> GenerationJob:
    """Store a queued job. Its backend name and sampling seed are fixed now, so a resumed job (or a later
    change of the default backend) never changes what it runs against or what it samples."""
    get_dataset(session, dataset_id)
    backend = params.backend or settings.default_backend
    backend_settings = registry.settings_of(backend)  # an unknown name: a 422 naming the configured ones
    if params.model is not None and params.model != backend_settings.model:
        check_adapter(session, backend, params.model)
    if not has_seeds(session, dataset_id):
        raise ConflictError(f"dataset {dataset_id} has no seed tasks yet: import seeds before generating")
    # The job seed drives example sampling, so it is fixed now even when the caller gave none; only a seed the
    # caller gave is also sent to the model (per-request seeds cost throughput on vLLM, and are only worth it
    # when the caller wants a rerun to repeat itself).
    seed = params.seed if params.seed is not None else secrets.randbelow(2**31)
    stored = params.model_copy(update={"backend": backend})
    job = GenerationJob(
        dataset_id=dataset_id,
        params=stored.model_dump(mode="json", exclude_none=True),
        backend=backend,
        seed=seed,
        status=JobStatus.queued,
        priority=params.priority,
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


def jobs_by_id(session: Session, job_ids: Sequence[int]) -> dict[int, GenerationJob]:
    """The jobs among `job_ids` that exist, by id, in one query."""
    if not job_ids:
        return {}
    return {j.id: j for j in session.scalars(select(GenerationJob).where(GenerationJob.id.in_(set(job_ids))))}


def list_jobs(session: Session, dataset_id: int, *, limit: int, offset: int) -> list[GenerationJob]:
    query = (
        select(GenerationJob)
        .where(GenerationJob.dataset_id == dataset_id)
        .order_by(GenerationJob.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query))


def cancel_job(session: Session, job_id: int) -> GenerationJob:
    """A queued job is cancelled at once; a running one is asked to stop (its accepted items are kept)."""
    job = get_job(session, job_id)
    try:
        queue.request_cancel(session, GenerationJob, job_id)
    except ConflictError:
        session.refresh(job)
        raise ConflictError(f"generation job {job_id} is already {job.status.value}") from None
    session.refresh(job)
    return job


def list_replies(session: Session, job_id: int, *, limit: int, after: int | None) -> list[GenerationReply]:
    """A job's replies in request order (keyset pagination on the request number)."""
    get_job(session, job_id)
    query = select(GenerationReply).where(GenerationReply.job_id == job_id)
    if after is not None:
        query = query.where(GenerationReply.request_no > after)
    return list(session.scalars(query.order_by(GenerationReply.request_no).limit(limit)))


def get_item(session: Session, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None:
        raise NotFoundError(f"item {item_id} not found")
    return item


def item_counts(session: Session, dataset_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Items by status (and in all) per dataset, from the trigger-kept `item_count` table: no scan of the items,
    however many."""
    counts: dict[int, dict[str, int]] = {
        i: {"items": 0, **{s.value: 0 for s in ItemStatus}} for i in dataset_ids
    }
    if not dataset_ids:
        return counts
    for dataset_id, status, n in session.execute(
        select(ItemCount.dataset_id, ItemCount.status, func.sum(ItemCount.n))
        .where(ItemCount.dataset_id.in_(dataset_ids))
        .group_by(ItemCount.dataset_id, ItemCount.status)
    ):
        counts[dataset_id][status] = int(n)  # PostgreSQL sums bigints as numeric
        counts[dataset_id]["items"] += int(n)
    return counts


def counts_by_dataset(session: Session, dataset_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """`item_counts`, and the jobs of each dataset (one grouped query)."""
    counts = {i: {"jobs": 0, **c} for i, c in item_counts(session, dataset_ids).items()}
    if not dataset_ids:
        return counts
    for dataset_id, n in session.execute(
        select(GenerationJob.dataset_id, func.count())
        .where(GenerationJob.dataset_id.in_(dataset_ids))
        .group_by(GenerationJob.dataset_id)
    ):
        counts[dataset_id]["jobs"] = n
    return counts


def item_instructions(session: Session, item_ids: Sequence[int]) -> dict[int, str]:
    """The instructions of the given items, by id (a neighbour's text for a reviewer or a preview)."""
    if not item_ids:
        return {}
    rows = session.execute(select(Item.id, Item.instruction).where(Item.id.in_(list(set(item_ids)))))
    return dict(rows.all())
