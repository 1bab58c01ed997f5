"""`GET /v1/jobs`: every job of every kind in one list, for the jobs page, `sprout jobs` and operators' scripts.
Cancelling stays with each kind's own route (the row's `cancel_url`), under that kind's permission."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import ReadSession
from app.auth.deps import Reader
from app.jobs.listing import MAX_LIMIT, JobFilter, list_jobs, parse_kinds, parse_statuses
from app.jobs.schemas import JobPage

router = APIRouter(tags=["jobs"])


@router.get("/v1/jobs", response_model=JobPage)
def jobs(
    _: Reader,
    session: ReadSession,
    kind: Annotated[
        str | None, Query(max_length=40, description="generation or fine_tune (a comma list: both).")
    ] = None,
    status: Annotated[
        list[str] | None,
        Query(max_length=200, description="Repeat it or give a comma list: queued, running, succeeded..."),
    ] = None,
    dataset_id: Annotated[int | None, Query(ge=1)] = None,
    active: Annotated[bool | None, Query(description="true: queued or running; false: finished.")] = None,
    after: Annotated[str | None, Query(max_length=300, description="next_cursor of the page before.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> JobPage:
    """Generation and fine-tuning jobs, newest first, in keyset pages, with their progress: accepted items of
    those requested, or training steps done of the total once the trainer reported them."""
    where = JobFilter(
        kinds=parse_kinds(kind), statuses=parse_statuses(status), dataset_id=dataset_id, active=active
    )
    rows, next_cursor = list_jobs(session, where, after=after, limit=limit)
    return JobPage(data=rows, next_cursor=next_cursor)
