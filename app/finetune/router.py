"""The OpenAI-compatible files and fine-tuning jobs API: the official `openai` SDK works against it unchanged.

Errors on these paths have OpenAI's shape (app/finetune/errors.py; app/main.py renders them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from app.api.deps import ReadSession, SessionFactoryDep, SettingsDep, WriteSession
from app.auth.deps import FineTuner, Reader
from app.core.db import transaction
from app.datasets.service import get_dataset
from app.finetune import service
from app.finetune.auto import AutoFinetune, auto_settings, set_auto
from app.finetune.errors import FieldError
from app.finetune.files import CHUNK_BYTES, JsonlError, delete_file, get_file, iter_content, store_file
from app.finetune.models import StoredFile
from app.finetune.schemas import (
    CheckpointList,
    CheckpointObject,
    EventList,
    EventObject,
    FileDeleted,
    FileList,
    FileObject,
    JobCreate,
    JobList,
    JobObject,
)

router = APIRouter(tags=["fine-tuning"])
auto_router = APIRouter(tags=["fine-tuning"])
Limit = Annotated[int, Query(ge=1, le=service.MAX_PAGE)]


def _chunks(upload: UploadFile, max_bytes: int) -> Iterator[bytes]:
    read = 0
    while data := upload.file.read(CHUNK_BYTES):
        read += len(data)
        if read > max_bytes:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"file: larger than {max_bytes} bytes")
        yield data


@router.post("/v1/files", response_model=FileObject)
def upload_file(
    principal: FineTuner,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="JSONL: one training example per line.")],
    purpose: Annotated[Literal["fine-tune"], Form()],
) -> FileObject:
    """Store a training file; one that is not JSONL (a line that is not a JSON object) is refused, naming it."""
    try:
        with transaction(sessions) as session:
            stored = store_file(
                session,
                _chunks(file, settings.max_upload_bytes),
                filename=file.filename or "upload.jsonl",
                purpose=purpose,
                created_by=principal.name,
                check_jsonl=True,
            )
            if stored.records == 0:
                raise FieldError("file", "the file holds no JSONL records", "invalid_file_format")
            return FileObject.of(stored)
    except JsonlError as exc:
        raise FieldError("file", f"not a JSONL file: {exc}", "invalid_file_format") from exc


@router.get("/v1/files", response_model=FileList)
def list_files(
    _: FineTuner,
    session: ReadSession,
    purpose: str | None = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> FileList:
    query = select(StoredFile)
    if purpose:
        query = query.where(StoredFile.purpose == purpose)
    if after:
        pivot = get_file(session, after).id
        query = query.where(StoredFile.id < pivot if order == "desc" else StoredFile.id > pivot)
    query = query.order_by(StoredFile.id.desc() if order == "desc" else StoredFile.id)
    found = list(session.scalars(query.limit(limit + 1)))
    data = [FileObject.of(f) for f in found[:limit]]
    return FileList(
        data=data,
        has_more=len(found) > limit,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/v1/files/{file_id}", response_model=FileObject)
def retrieve_file(_: FineTuner, file_id: str, session: ReadSession) -> FileObject:
    return FileObject.of(get_file(session, file_id))


@router.get("/v1/files/{file_id}/content")
def file_content(
    _: FineTuner, file_id: str, session: ReadSession, sessions: SessionFactoryDep
) -> StreamingResponse:
    stored = get_file(session, file_id)
    media = "application/jsonl" if stored.records else "application/octet-stream"
    return StreamingResponse(
        iter_content(sessions, stored.id),
        media_type=media,
        headers={
            "Content-Length": str(stored.bytes),
            "Content-Disposition": f'attachment; filename="{stored.public_id}"',
        },
    )


@router.delete("/v1/files/{file_id}", response_model=FileDeleted)
def remove_file(_: FineTuner, file_id: str, session: WriteSession) -> FileDeleted:
    """Refused (409) while a job or a snapshot uses the file."""
    return FileDeleted(id=delete_file(session, file_id).public_id)


@auto_router.put("/v1/datasets/{dataset_id}/finetune/auto", response_model=AutoFinetune)
def set_auto_feed(
    _: FineTuner, dataset_id: int, body: AutoFinetune, session: WriteSession, settings: SettingsDep
) -> AutoFinetune:
    """Ask for a fine-tuning job on `model` whenever `every` new approved items have accumulated (from a
    fresh snapshot; never two at once per dataset). `enabled: false` pauses it."""
    return set_auto(session, dataset_id, body, settings)


@auto_router.get("/v1/datasets/{dataset_id}/finetune/auto", response_model=AutoFinetune | None)
def get_auto_feed(_: Reader, dataset_id: int, session: ReadSession) -> AutoFinetune | None:
    return auto_settings(get_dataset(session, dataset_id))


@router.post("/v1/fine_tuning/jobs", response_model=JobObject)
def create_job(
    principal: FineTuner,
    body: JobCreate,
    request: Request,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
) -> JobObject:
    with transaction(sessions) as session:
        job = service.create_job(session, body, settings, principal.name)
        out = service.job_object(session, job)
    request.app.state.notify_worker()
    return out


@router.get("/v1/fine_tuning/jobs", response_model=JobList)
def list_jobs(
    _: FineTuner,
    session: ReadSession,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 20,
) -> JobList:
    jobs, has_more = service.list_jobs(session, after, limit)
    files = service.file_ids(session, jobs)
    return JobList(data=[JobObject.of(j, files) for j in jobs], has_more=has_more)


@router.get("/v1/fine_tuning/jobs/{fine_tuning_job_id}", response_model=JobObject)
def retrieve_job(_: FineTuner, fine_tuning_job_id: str, session: ReadSession) -> JobObject:
    return service.job_object(session, service.get_job(session, fine_tuning_job_id))


@router.post("/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel", response_model=JobObject)
def cancel_job(_: FineTuner, fine_tuning_job_id: str, sessions: SessionFactoryDep) -> JobObject:
    """A queued job is cancelled at once; a running one stops within seconds (409 once it is finished)."""
    with transaction(sessions) as session:
        job = service.cancel_job(session, fine_tuning_job_id)
        return service.job_object(session, job)


@router.get("/v1/fine_tuning/jobs/{fine_tuning_job_id}/events", response_model=EventList)
def job_events(
    _: FineTuner,
    fine_tuning_job_id: str,
    session: ReadSession,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 20,
) -> EventList:
    events, has_more = service.list_events(
        session, service.get_job(session, fine_tuning_job_id), after, limit
    )
    return EventList(data=[EventObject.of(e) for e in events], has_more=has_more)


@router.get("/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", response_model=CheckpointList)
def job_checkpoints(
    _: FineTuner,
    fine_tuning_job_id: str,
    session: ReadSession,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 10,
) -> CheckpointList:
    job = service.get_job(session, fine_tuning_job_id)
    found, has_more = service.list_checkpoints(session, job, after, limit)
    data = [CheckpointObject.of(c, job) for c in found]
    return CheckpointList(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )
