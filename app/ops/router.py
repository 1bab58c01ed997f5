"""Operations: Prometheus metrics (public, like health), usage per dataset, backend or job, and the fleet's
workers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from app.api.deps import ReadSession, SettingsDep
from app.auth.deps import Public, Reader
from app.core.errors import InvalidFieldError
from app.datasets.service import get_dataset
from app.ops.metrics import process_registry
from app.ops.schemas import UsageOut, UsageRow, WorkerOut
from app.ops.service import WorkerState, database_now, worker_views
from app.ops.usage import UsageBy, UsageFilter, as_utc, usage_report

router = APIRouter(tags=["operations"])


class _Exposed:
    """This process's own metrics, then the fleet's as this app reads them from the database."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self._registries = registries

    def collect(self) -> Iterator[Metric]:
        for registry in self._registries:
            yield from registry.collect()


@router.get("/metrics", dependencies=[Public], include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text format. A plain function: FastAPI runs it in a thread, so the fleet's queries never
    hold up the event loop."""
    body = generate_latest(_Exposed(process_registry(), request.app.state.fleet_metrics))
    return Response(content=body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


@router.get("/v1/usage", response_model=UsageOut)
def usage(
    _: Reader,
    session: ReadSession,
    by: Annotated[
        UsageBy, Query(description="Sum per dataset or per backend, or list jobs.")
    ] = UsageBy.dataset,
    dataset_id: Annotated[int | None, Query(ge=1)] = None,
    backend: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    since: Annotated[
        datetime | None, Query(description="Jobs queued at or after (ISO 8601; UTC if no zone).")
    ] = None,
    until: Annotated[datetime | None, Query(description="Jobs queued before.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Jobs per page (by=job).")] = 100,
    cursor: Annotated[
        int | None, Query(ge=1, description="by=job: the next_cursor of the previous page.")
    ] = None,
) -> UsageOut:
    """Tokens, requests, errors, time and yield of generation jobs, from the jobs' own counters."""
    if since is not None and until is not None and as_utc(until) <= as_utc(since):
        raise InvalidFieldError("until", "must be later than since", location="query")
    if dataset_id is not None:
        get_dataset(session, dataset_id)  # 404 for a dataset that does not exist
    where = UsageFilter(dataset_id=dataset_id, backend=backend, since=since, until=until)
    total, rows, next_before = usage_report(session, by, where, limit=limit, before=cursor)
    return UsageOut(
        by=by,
        dataset_id=dataset_id,
        backend=backend,
        since=as_utc(since) if since is not None else None,
        until=as_utc(until) if until is not None else None,
        total=UsageRow.of(total),
        data=[UsageRow.of(row) for row in rows],
        next_cursor=str(next_before) if next_before is not None else None,
    )


@router.get("/v1/workers", response_model=list[WorkerOut])
def workers(
    _: Reader,
    session: ReadSession,
    settings: SettingsDep,
    state: Annotated[list[WorkerState] | None, Query(description="Only workers in these states.")] = None,
) -> list[WorkerOut]:
    """The fleet's registered workers (the newest first): alive, stale (presumed dead) or stopped."""
    views = worker_views(session, database_now(session), settings.worker_heartbeat_seconds, states=state)
    return [WorkerOut.of(view) for view in views]
