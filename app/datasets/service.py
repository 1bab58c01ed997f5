"""Datasets and their seed tasks: creation, look-up, and all-or-nothing seed import."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.errors import ConflictError, NotFoundError
from app.datasets.models import Dataset, SeedTask
from app.datasets.seed_formats import SeedTaskIn


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


def seed_counts(session: Session, dataset_ids: Sequence[int]) -> dict[int, int]:
    counts = dict.fromkeys(dataset_ids, 0)
    if dataset_ids:
        for dataset_id, n in session.execute(
            select(SeedTask.dataset_id, func.count())
            .where(SeedTask.dataset_id.in_(dataset_ids))
            .group_by(SeedTask.dataset_id)
        ):
            counts[dataset_id] = n
    return counts


def has_seeds(session: Session, dataset_id: int) -> bool:
    return session.scalar(select(SeedTask.id).where(SeedTask.dataset_id == dataset_id).limit(1)) is not None


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


def all_seeds(session: Session, dataset_id: int) -> list[SeedTask]:
    """Every seed task of a dataset, in import order (what a generation job samples its examples from)."""
    return list(
        session.scalars(select(SeedTask).where(SeedTask.dataset_id == dataset_id).order_by(SeedTask.id))
    )


def seeds_after(session: Session, dataset_id: int, last_id: int) -> list[tuple[int, str]]:
    """(id, instruction) of the dataset's seeds with ids above `last_id`, in id order (an index catching up)."""
    rows = session.execute(
        select(SeedTask.id, SeedTask.instruction)
        .where(SeedTask.dataset_id == dataset_id, SeedTask.id > last_id)
        .order_by(SeedTask.id)
    )
    return [(row.id, row.instruction) for row in rows]


def seed_instructions(session: Session, seed_ids: Sequence[int]) -> dict[int, str]:
    """The instructions of the given seeds, by id (a neighbour's text for a reviewer or a preview)."""
    if not seed_ids:
        return {}
    rows = session.execute(
        select(SeedTask.id, SeedTask.instruction).where(SeedTask.id.in_(list(set(seed_ids))))
    )
    return dict(rows.all())


def set_dataset_setting(session: Session, dataset: Dataset, key: str, value: Any) -> None:
    """Replace one key of the dataset's settings (a new dict, so the JSON column is written)."""
    dataset.settings = {**(dataset.settings or {}), key: value}
