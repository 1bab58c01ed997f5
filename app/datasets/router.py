"""Datasets and their seed tasks."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status
from pydantic import ValidationError

from app.api.deps import ReadSession, SessionFactoryDep, SettingsDep, WriteSession
from app.api.limits import read_upload
from app.api.schemas import Page
from app.auth.deps import DatasetManager, Reader
from app.core.db import transaction
from app.core.errors import InvalidFieldError
from app.datasets.schemas import DatasetCreate, DatasetOut, SeedImportOut, SeedTaskOut
from app.datasets.seed_formats import SeedFormatError, parse_seed_file
from app.datasets.service import (
    create_dataset,
    get_dataset,
    import_seeds,
    list_datasets,
    list_seeds,
    seed_counts,
)
from app.generation.service import counts_by_dataset
from app.review.settings import ReviewSettingsIn

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def _with_counts(session, datasets) -> list[DatasetOut]:  # noqa: ANN001 (Session, list[Dataset])
    ids = [d.id for d in datasets]
    seeds, generated = seed_counts(session, ids), counts_by_dataset(session, ids)
    return [DatasetOut.of(d, {"seeds": seeds[d.id], **generated[d.id]}) for d in datasets]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetOut)
def create(_: DatasetManager, body: DatasetCreate, session: WriteSession) -> DatasetOut:
    if (
        "review" in body.settings
    ):  # checked here, so a dataset never holds review settings the queue cannot use
        try:
            ReviewSettingsIn.model_validate(body.settings["review"])
        except ValidationError as exc:
            raise InvalidFieldError("settings.review", str(exc.errors()[0]["msg"])) from exc
    dataset = create_dataset(session, body.name, body.description, body.settings)
    return _with_counts(session, [dataset])[0]


@router.get("", response_model=list[DatasetOut])
def list_all(_: Reader, session: ReadSession) -> list[DatasetOut]:
    return _with_counts(session, list_datasets(session))


@router.get("/{dataset_id}", response_model=DatasetOut)
def get(_: Reader, dataset_id: int, session: ReadSession) -> DatasetOut:
    return _with_counts(session, [get_dataset(session, dataset_id)])[0]


@router.post("/{dataset_id}/seeds", response_model=SeedImportOut, status_code=status.HTTP_201_CREATED)
def upload_seeds(
    _: DatasetManager,
    dataset_id: int,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="Self-Instruct JSONL, Alpaca JSON/JSONL, or CSV")],
    format: Annotated[Literal["auto", "self_instruct", "alpaca", "csv"], Form()] = "auto",
) -> SeedImportOut:
    """Import seed tasks from a file. A malformed file imports nothing; the error names the line and field.

    A plain (sync) route: FastAPI runs it in a worker thread, so parsing a large file never holds the event loop.
    """
    data = read_upload(file, settings.max_upload_bytes)
    with sessions() as session:
        get_dataset(session, dataset_id)  # a 404 before the work of parsing
    try:
        tasks = parse_seed_file(data, filename=file.filename, format=format)
    except SeedFormatError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            {"message": str(exc), "line": exc.line, "field": exc.field, "file": file.filename},
        ) from exc
    with transaction(sessions) as session:
        result = import_seeds(
            session, get_dataset(session, dataset_id), tasks, source=file.filename or "upload"
        )
    return SeedImportOut(
        dataset_id=dataset_id,
        format=format,
        parsed=len(tasks),
        imported=result.imported,
        skipped_existing=result.skipped_existing,
        total_seeds=result.total_seeds,
    )


@router.get("/{dataset_id}/seeds", response_model=Page[SeedTaskOut])
def seeds(
    _: Reader,
    dataset_id: int,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[SeedTaskOut]:
    get_dataset(session, dataset_id)
    rows, total = list_seeds(session, dataset_id, limit=limit, offset=offset)
    return Page(data=[SeedTaskOut.of(s) for s in rows], total=total, limit=limit, offset=offset)
