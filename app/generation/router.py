"""Generation jobs (queue, watch, cancel, read their replies, preview one request), the items they produced, and
imports of instruction files as items."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, Response, UploadFile, status

from app.api.deps import ReadSession, RegistryDep, SessionFactoryDep, SettingsDep
from app.api.limits import read_upload
from app.api.schemas import CursorPage
from app.auth.deps import DatasetManager, Generator, Reader
from app.core.db import transaction
from app.datasets.service import get_dataset
from app.generation import item_query
from app.generation.imports import get_import, list_imports, run_import, start_import
from app.generation.item_formats import ItemFileFormat, ItemFormatError, parse_item_file
from app.generation.models import DUPLICATE_SIGNALS, ItemStatus
from app.generation.params import GenerationParams
from app.generation.pipeline.preview import preview_generation
from app.generation.schemas import ImportOut, ItemOut, JobOut, PreviewOut, ReplyChoiceOut, ReplyOut
from app.generation.service import (
    cancel_job,
    get_item,
    get_job,
    list_jobs,
    list_replies,
    queue_job,
)
from app.reports.language import LANGUAGES

router = APIRouter(tags=["generations"])


@router.post(
    "/v1/datasets/{dataset_id}/generations", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut
)
def create_generation(
    _: Generator,
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
    _: Generator,
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
    _: Generator,
    dataset_id: int,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[JobOut]:
    get_dataset(session, dataset_id)
    return [JobOut.of(j) for j in list_jobs(session, dataset_id, limit=limit, offset=offset)]


@router.get("/v1/generations/{job_id}", response_model=JobOut)
def get_generation(_: Generator, job_id: int, session: ReadSession) -> JobOut:
    return JobOut.of(get_job(session, job_id))


@router.post("/v1/generations/{job_id}/cancel", response_model=JobOut)
def cancel_generation(_: Generator, job_id: int, sessions: SessionFactoryDep) -> JobOut:
    """Cancel a job: a queued one at once, a running one within moments (409 once it has finished)."""
    with transaction(sessions) as session:
        job = cancel_job(session, job_id)
    return JobOut.of(job)


@router.get("/v1/generations/{job_id}/replies", response_model=list[ReplyOut])
def replies(
    _: Generator,
    job_id: int,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[int | None, Query(ge=-1, description="Request number to continue after.")] = None,
) -> list[ReplyOut]:
    """The raw replies of a job, in request order: what the model wrote, or why the request failed."""
    return [ReplyOut.of(r) for r in list_replies(session, job_id, limit=limit, after=after)]


@router.get("/v1/datasets/{dataset_id}/items", response_model=CursorPage[ItemOut])
def list_dataset_items(
    _: Reader,
    dataset_id: int,
    session: ReadSession,
    status: ItemStatus | None = None,
    filter_reason: Annotated[str | None, Query(max_length=64)] = None,
    duplicate_signal: Annotated[str | None, Query(pattern=f"^({'|'.join(DUPLICATE_SIGNALS)})$")] = None,
    job_id: int | None = None,
    import_id: int | None = None,
    language: Annotated[str | None, Query(pattern=f"^({'|'.join(LANGUAGES)})$")] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Text in the instruction, input or output.")
    ] = None,
    sort: item_query.Sort = "oldest",
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the page before.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    count: Annotated[bool, Query(description="Also count every matching item (a scan).")] = False,
) -> CursorPage[ItemOut]:
    """Items, filtered, in keyset pages (a deep page costs what the first one does)."""
    get_dataset(session, dataset_id)
    where = item_query.ItemQuery(
        status=status,
        job_id=job_id,
        import_id=import_id,
        language=language,
        filter_reason=filter_reason,
        duplicate_signal=duplicate_signal,
        text=q or None,
    )
    rows, next_cursor = item_query.page(session, dataset_id, where, sort=sort, cursor=cursor, limit=limit)
    total = item_query.count(session, dataset_id, where) if count else None
    return CursorPage(data=[ItemOut.of(i) for i in rows], next_cursor=next_cursor, total=total)


@router.get("/v1/items/{item_id}", response_model=ItemOut)
def get_one(_: Reader, item_id: int, session: ReadSession) -> ItemOut:
    return ItemOut.of(get_item(session, item_id))


@router.post(
    "/v1/datasets/{dataset_id}/items/import", status_code=status.HTTP_201_CREATED, response_model=ImportOut
)
def import_items(
    principal: DatasetManager,
    dataset_id: int,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="Alpaca JSON/JSONL, ShareGPT, or OpenAI chat JSONL")],
    format: Annotated[ItemFileFormat, Form()] = "auto",
) -> ImportOut:
    """Bring your own data: the records become items through the same filters and near-duplicate index as
    generated ones (every drop keeps its reason); the rest waits for review. A malformed file imports nothing
    and the 422 names the line and field. A plain (sync) route: parsing runs in a worker thread."""
    data = read_upload(file, settings.max_upload_bytes)
    with sessions() as session:
        get_dataset(session, dataset_id)  # a 404 before the work of parsing
    try:
        records = parse_item_file(data, filename=file.filename, format=format)
    except ItemFormatError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            {
                "message": str(exc),
                "line": exc.line,
                "field": exc.field,
                "record": exc.record,
                "file": file.filename,
            },
        ) from exc
    with transaction(sessions) as session:
        started = start_import(
            session,
            dataset_id,
            filename=file.filename or "upload",
            format=format,
            records=len(records),
            by=principal.name,
        )
    return ImportOut.of(run_import(sessions, settings, started.id, records))


@router.get("/v1/datasets/{dataset_id}/imports", response_model=list[ImportOut])
def imports(_: Reader, dataset_id: int, session: ReadSession) -> list[ImportOut]:
    return [ImportOut.of(i) for i in list_imports(session, dataset_id)]


@router.get("/v1/imports/{import_id}", response_model=ImportOut)
def one_import(_: Reader, import_id: int, session: ReadSession) -> ImportOut:
    return ImportOut.of(get_import(session, import_id))
