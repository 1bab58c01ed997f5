"""Datasets and their seed tasks."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status

from app.api.deps import SessionDep
from app.api.schemas import DatasetCreate, DatasetOut, Page, SeedImportOut, SeedTaskOut
from app.core.seed_formats import SeedFormatError, parse_seed_file
from app.datasets import create_dataset, dataset_counts, get_dataset, import_seeds, list_datasets, list_seeds

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

MAX_SEED_FILE_BYTES = 20 * 1024 * 1024


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetOut)
def create(body: DatasetCreate, session: SessionDep) -> DatasetOut:
    dataset = create_dataset(session, body.name, body.description, body.settings)
    return DatasetOut.of(dataset, dataset_counts(session, [dataset.id])[dataset.id])


@router.get("", response_model=list[DatasetOut])
def list_all(session: SessionDep) -> list[DatasetOut]:
    datasets = list_datasets(session)
    counts = dataset_counts(session, [d.id for d in datasets])
    return [DatasetOut.of(d, counts[d.id]) for d in datasets]


@router.get("/{dataset_id}", response_model=DatasetOut)
def get(dataset_id: int, session: SessionDep) -> DatasetOut:
    dataset = get_dataset(session, dataset_id)
    return DatasetOut.of(dataset, dataset_counts(session, [dataset.id])[dataset.id])


@router.post("/{dataset_id}/seeds", response_model=SeedImportOut, status_code=status.HTTP_201_CREATED)
async def upload_seeds(
    dataset_id: int,
    session: SessionDep,
    file: Annotated[UploadFile, File(description="Self-Instruct JSONL, Alpaca JSON/JSONL, or CSV")],
    format: Annotated[Literal["auto", "self_instruct", "alpaca", "csv"], Form()] = "auto",
) -> SeedImportOut:
    """Import seed tasks from a file. A malformed file imports nothing; the error names the line and field."""
    dataset = get_dataset(session, dataset_id)
    data = await file.read(MAX_SEED_FILE_BYTES + 1)
    if len(data) > MAX_SEED_FILE_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"file: larger than {MAX_SEED_FILE_BYTES} bytes"
        )
    try:
        tasks = parse_seed_file(data, filename=file.filename, format=format)
    except SeedFormatError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            {"message": str(exc), "line": exc.line, "field": exc.field, "file": file.filename},
        ) from exc
    result = import_seeds(session, dataset, tasks, source=file.filename or "upload")
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
    dataset_id: int,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[SeedTaskOut]:
    get_dataset(session, dataset_id)
    rows, total = list_seeds(session, dataset_id, limit=limit, offset=offset)
    return Page(data=[SeedTaskOut.of(s) for s in rows], total=total, limit=limit, offset=offset)
