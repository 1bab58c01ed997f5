"""Generation jobs (queue, watch, cancel, read their replies, preview one request) and the items they produced."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.api.deps import ReadSession, RegistryDep, SessionFactoryDep, SettingsDep
from app.api.schemas import Page
from app.core.db import transaction
from app.datasets.service import get_dataset
from app.generation.models import DUPLICATE_SIGNALS, ItemStatus
from app.generation.params import GenerationParams
from app.generation.pipeline.preview import preview_generation
from app.generation.schemas import ItemOut, JobOut, PreviewOut, ReplyChoiceOut, ReplyOut
from app.generation.service import (
    ItemFilter,
    cancel_job,
    get_item,
    get_job,
    list_items,
    list_jobs,
    list_replies,
    queue_job,
)

router = APIRouter(tags=["generations"])


@router.post(
    "/v1/datasets/{dataset_id}/generations", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut
)
def create_generation(
    dataset_id: int,
    params: GenerationParams,
    request: Request,
    response: Response,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
    registry: RegistryDep,
) -> JobOut:
    """Queue a generation job and return it at once; a worker runs it in the background."""
    with transaction(sessions) as session:
        job = queue_job(session, dataset_id, params, settings, registry)
    request.app.state.notify_worker()  # after the commit, so the worker sees the job
    response.headers["Location"] = f"/v1/generations/{job.id}"
    return JobOut.of(job)


@router.post("/v1/datasets/{dataset_id}/generations/preview", response_model=PreviewOut)
async def preview(
    dataset_id: int,
    params: GenerationParams,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
    registry: RegistryDep,
) -> PreviewOut:
    """Render one prompt, call the backend once and show what parsing, filters and the index make of the
    reply. Nothing is stored."""
    result = await preview_generation(sessions, settings, registry, dataset_id, params)
    return PreviewOut(
        backend=result.backend,
        mode=result.mode,
        request=result.request,
        choices=[ReplyChoiceOut.model_validate(c) for c in result.screened.choices],
        error=result.screened.error,
        candidates=result.candidates,  # type: ignore[arg-type]
        latency_ms=result.screened.latency_ms,
    )


@router.get("/v1/datasets/{dataset_id}/generations", response_model=list[JobOut])
def list_generations(
    dataset_id: int,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[JobOut]:
    get_dataset(session, dataset_id)
    return [JobOut.of(j) for j in list_jobs(session, dataset_id, limit=limit, offset=offset)]


@router.get("/v1/generations/{job_id}", response_model=JobOut)
def get_generation(job_id: int, session: ReadSession) -> JobOut:
    return JobOut.of(get_job(session, job_id))


@router.post("/v1/generations/{job_id}/cancel", response_model=JobOut)
def cancel_generation(job_id: int, sessions: SessionFactoryDep) -> JobOut:
    """Cancel a job: a queued one at once, a running one within moments (409 once it has finished)."""
    with transaction(sessions) as session:
        job = cancel_job(session, job_id)
    return JobOut.of(job)


@router.get("/v1/generations/{job_id}/replies", response_model=list[ReplyOut])
def replies(
    job_id: int,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[int | None, Query(ge=-1, description="Request number to continue after.")] = None,
) -> list[ReplyOut]:
    """The raw replies of a job, in request order: what the model wrote, or why the request failed."""
    return [ReplyOut.of(r) for r in list_replies(session, job_id, limit=limit, after=after)]


@router.get("/v1/datasets/{dataset_id}/items", response_model=Page[ItemOut])
def list_dataset_items(
    dataset_id: int,
    session: ReadSession,
    status: ItemStatus | None = None,
    filter_reason: Annotated[str | None, Query(max_length=64)] = None,
    duplicate_signal: Annotated[str | None, Query(pattern=f"^({'|'.join(DUPLICATE_SIGNALS)})$")] = None,
    job_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[ItemOut]:
    get_dataset(session, dataset_id)
    where = ItemFilter(
        status=status, filter_reason=filter_reason, duplicate_signal=duplicate_signal, job_id=job_id
    )
    rows, total = list_items(session, dataset_id, where, limit=limit, offset=offset)
    return Page(data=[ItemOut.of(i) for i in rows], total=total, limit=limit, offset=offset)


@router.get("/v1/items/{item_id}", response_model=ItemOut)
def get_one(item_id: int, session: ReadSession) -> ItemOut:
    return ItemOut.of(get_item(session, item_id))
