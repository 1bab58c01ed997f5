"""Reading generated items: filtered listing with a stable order and a total for pagination."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.datasets import NotFoundError
from app.models import Item, ItemStatus


@dataclass(frozen=True, slots=True)
class ItemFilter:
    status: ItemStatus | None = None
    filter_reason: str | None = None
    duplicate_signal: str | None = None
    job_id: int | None = None


def list_items(
    session: Session, dataset_id: int, where: ItemFilter, *, limit: int, offset: int
) -> tuple[list[Item], int]:
    conditions = [Item.dataset_id == dataset_id]
    if where.status is not None:
        conditions.append(Item.status == where.status)
    if where.filter_reason is not None:
        conditions.append(Item.filter_reason == where.filter_reason)
    if where.duplicate_signal is not None:
        conditions.append(Item.duplicate_signal == where.duplicate_signal)
    if where.job_id is not None:
        conditions.append(Item.job_id == where.job_id)
    total = session.scalar(select(func.count()).select_from(Item).where(*conditions)) or 0
    rows = session.scalars(select(Item).where(*conditions).order_by(Item.id).limit(limit).offset(offset))
    return list(rows), total


def get_item(session: Session, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None:
        raise NotFoundError(f"item {item_id} not found")
    return item
