"""Generation jobs: queue (returns at once), watch the live counters, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.api.deps import SessionDep
from app.api.schemas import JobOut
from app.datasets import get_dataset
from app.db import transaction
from app.generation.jobs import get_job, list_jobs, queue_job, request_cancel
from app.generation.params import GenerationParams

router = APIRouter(tags=["generations"])


@router.post(
    "/v1/datasets/{dataset_id}/generations", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut
)
def create_generation(
    dataset_id: int, params: GenerationParams, request: Request, response: Response
) -> JobOut:
    """Queue a generation job and return it at once; the service's worker runs it in the background."""
    with transaction(request.app.state.sessions) as session:
        job = queue_job(session, dataset_id, params)
    request.app.state.notify_worker()  # after the commit, so the worker sees the job
    response.headers["Location"] = f"/v1/generations/{job.id}"
    return JobOut.of(job)


@router.get("/v1/datasets/{dataset_id}/generations", response_model=list[JobOut])
def list_generations(
    dataset_id: int,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[JobOut]:
    get_dataset(session, dataset_id)
    return [JobOut.of(j) for j in list_jobs(session, dataset_id, limit=limit, offset=offset)]


@router.get("/v1/generations/{job_id}", response_model=JobOut)
def get_generation(job_id: int, session: SessionDep) -> JobOut:
    return JobOut.of(get_job(session, job_id))


@router.post("/v1/generations/{job_id}/cancel", response_model=JobOut)
def cancel_generation(job_id: int, session: SessionDep) -> JobOut:
    """Cancel a job: a queued one at once, a running one after the batch in flight (409 if already finished)."""
    return JobOut.of(request_cancel(session, job_id))
