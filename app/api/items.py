"""Generated items, with filters and pagination."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import SessionDep
from app.api.schemas import ItemOut, Page
from app.datasets import get_dataset
from app.items import ItemFilter, get_item, list_items
from app.models import ItemStatus

router = APIRouter(tags=["items"])


@router.get("/v1/datasets/{dataset_id}/items", response_model=Page[ItemOut])
def list_dataset_items(
    dataset_id: int,
    session: SessionDep,
    status: ItemStatus | None = None,
    filter_reason: Annotated[str | None, Query(max_length=64)] = None,
    duplicate_signal: Annotated[str | None, Query(pattern="^(exact|rouge_l|fuzzy|semantic)$")] = None,
    job_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[ItemOut]:
    get_dataset(session, dataset_id)
    where = ItemFilter(
        status=status, filter_reason=filter_reason, duplicate_signal=duplicate_signal, job_id=job_id
    )
    rows, total = list_items(session, dataset_id, where, limit=limit, offset=offset)
    return Page(data=[ItemOut.of(i) for i in rows], total=total, limit=limit, offset=offset)


@router.get("/v1/items/{item_id}", response_model=ItemOut)
def get_one(item_id: int, session: SessionDep) -> ItemOut:
    return ItemOut.of(get_item(session, item_id))
