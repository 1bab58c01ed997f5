"""Datasets and their seed tasks: creation, look-up with counts, and all-or-nothing seed import."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.seed_formats import SeedTaskIn
from app.models import Dataset, GenerationJob, Item, ItemStatus, SeedTask


class NotFoundError(LookupError):
    """A named or numbered thing does not exist (the API turns it into a 404)."""


class ConflictError(ValueError):
    """The request clashes with what is stored, e.g. a dataset name already taken (the API turns it into 409)."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    imported: int
    skipped_existing: int
    total_seeds: int


def instruction_hash(instruction: str) -> str:
    return hashlib.sha256(instruction.strip().encode("utf-8")).hexdigest()


def create_dataset(
    session: Session, name: str, description: str = "", settings: dict[str, Any] | None = None
) -> Dataset:
    if session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None:
        raise ConflictError(f"dataset name {name!r} is already taken")
    dataset = Dataset(name=name, description=description, settings=settings or {})
    session.add(dataset)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create won the race
        raise ConflictError(f"dataset name {name!r} is already taken") from exc
    return dataset


def get_dataset(session: Session, dataset_id: int) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFoundError(f"dataset {dataset_id} not found")
    return dataset


def get_dataset_by_name(session: Session, name: str) -> Dataset:
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        raise NotFoundError(f"dataset {name!r} not found")
    return dataset


def get_or_create_dataset(session: Session, name: str) -> Dataset:
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    return dataset if dataset is not None else create_dataset(session, name)


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.id)))


def dataset_counts(session: Session, dataset_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Items by status, seeds and jobs for each dataset, in three grouped queries whatever the number of datasets."""
    counts: dict[int, dict[str, int]] = {
        i: {"seeds": 0, "jobs": 0, "items": 0, **{s.value: 0 for s in ItemStatus}} for i in dataset_ids
    }
    if not dataset_ids:
        return counts
    for dataset_id, status, n in session.execute(
        select(Item.dataset_id, Item.status, func.count())
        .where(Item.dataset_id.in_(dataset_ids))
        .group_by(Item.dataset_id, Item.status)
    ):
        counts[dataset_id][ItemStatus(status).value] = n
        counts[dataset_id]["items"] += n
    for model, key in ((SeedTask, "seeds"), (GenerationJob, "jobs")):
        for dataset_id, n in session.execute(
            select(model.dataset_id, func.count())
            .where(model.dataset_id.in_(dataset_ids))
            .group_by(model.dataset_id)
        ):
            counts[dataset_id][key] = n
    return counts


def import_seeds(
    session: Session, dataset: Dataset, tasks: Sequence[SeedTaskIn], source: str
) -> ImportResult:
    """Add seed tasks; ones whose instruction the dataset already has are skipped, so re-importing is harmless.

    The caller's transaction makes the import all-or-nothing.
    """
    existing = set(
        session.scalars(select(SeedTask.instruction_hash).where(SeedTask.dataset_id == dataset.id))
    )
    imported = 0
    for task in tasks:
        digest = instruction_hash(task.instruction)
        if digest in existing:
            continue
        existing.add(digest)
        session.add(
            SeedTask(
                dataset_id=dataset.id,
                name=task.name,
                instruction=task.instruction,
                instruction_hash=digest,
                instances=[{"input": i.input, "output": i.output} for i in task.instances],
                is_classification=task.is_classification,
                source=source[:200],
                source_id=task.source_id,
            )
        )
        imported += 1
    session.flush()
    total = session.scalar(
        select(func.count()).select_from(SeedTask).where(SeedTask.dataset_id == dataset.id)
    )
    return ImportResult(imported=imported, skipped_existing=len(tasks) - imported, total_seeds=total or 0)


def list_seeds(session: Session, dataset_id: int, *, limit: int, offset: int) -> tuple[list[SeedTask], int]:
    total = (
        session.scalar(select(func.count()).select_from(SeedTask).where(SeedTask.dataset_id == dataset_id))
        or 0
    )
    rows = session.scalars(
        select(SeedTask)
        .where(SeedTask.dataset_id == dataset_id)
        .order_by(SeedTask.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total
