"""Bulk actions: approve, reject or restore every item a query matches (not a page of it), as an admin.

The matching ids are read once, then changed in chunks of CHUNK items, each chunk one transaction that locks
its rows in id order, re-checks them against the query and their expected status (an item a reviewer decided
meanwhile is left alone), bumps their versions, drops their claims and appends one event per item, all with the
same bulk id. Chunks keep the write lock short (on SQLite, the whole database's), so reviewers keep working
while a bulk action over 50,000 items runs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.auth.service import Principal, audit
from app.core.db import transaction, utcnow
from app.generation.item_query import ItemQuery, conditions
from app.generation.models import Item, ItemStatus
from app.review.claims import drop_claims
from app.review.models import ReviewAction, ReviewEvent

BulkAction = Literal["approve", "reject", "restore"]
CHUNK = 1000
# Which statuses each action moves, and where to.
SOURCES: dict[BulkAction, tuple[ItemStatus, ...]] = {
    "approve": (ItemStatus.pending, ItemStatus.disputed),
    "reject": (ItemStatus.pending, ItemStatus.disputed),
    "restore": (ItemStatus.filtered,),
}
TARGET: dict[BulkAction, ItemStatus] = {
    "approve": ItemStatus.approved,
    "reject": ItemStatus.rejected,
    "restore": ItemStatus.pending,
}


@dataclass(frozen=True, slots=True)
class BulkResult:
    bulk_id: str | None
    matched: int  # items the query matched in a status the action applies to
    changed: int  # items changed (fewer when reviewers decided some meanwhile)


def _matching(session: Session, dataset_id: int, action: BulkAction, query: ItemQuery) -> list[int]:
    statuses = [s for s in SOURCES[action] if query.status is None or query.status == s]
    if not statuses:
        return []
    return list(
        session.scalars(
            select(Item.id).where(*conditions(dataset_id, query), Item.status.in_(statuses)).order_by(Item.id)
        )
    )


def preview_bulk(session: Session, dataset_id: int, action: BulkAction, query: ItemQuery) -> BulkResult:
    return BulkResult(None, len(_matching(session, dataset_id, action, query)), 0)


def run_bulk(
    sessions: sessionmaker[Session],
    principal: Principal,
    dataset_id: int,
    action: BulkAction,
    query: ItemQuery,
    *,
    reason: str | None,
    note: str | None,
) -> BulkResult:
    with sessions() as session:
        ids = _matching(session, dataset_id, action, query)
    bulk_id = uuid.uuid4().hex
    changed = 0
    for start in range(0, len(ids), CHUNK):
        with transaction(sessions) as session:
            changed += _apply_chunk(
                session,
                principal,
                dataset_id,
                action,
                query,
                ids[start : start + CHUNK],
                bulk_id,
                reason,
                note,
            )
    with transaction(sessions) as session:
        audit(
            session,
            principal,
            f"review.bulk_{action}",
            f"dataset {dataset_id}",
            bulk_id=bulk_id,
            query=query.as_params(),
            matched=len(ids),
            changed=changed,
            reason=reason,
        )
    return BulkResult(bulk_id, len(ids), changed)


def _apply_chunk(
    session: Session,
    principal: Principal,
    dataset_id: int,
    action: BulkAction,
    query: ItemQuery,
    chunk: list[int],
    bulk_id: str,
    reason: str | None,
    note: str | None,
) -> int:
    target = TARGET[action]
    rows = session.execute(
        select(Item.id, Item.status, Item.filter_reason, Item.version)
        .where(Item.id.in_(chunk), *conditions(dataset_id, query), Item.status.in_(SOURCES[action]))
        .order_by(Item.id)
        .with_for_update()
    ).all()
    if not rows:
        return 0
    ids = [r.id for r in rows]
    drop_claims(session, ids)
    now = utcnow()
    session.execute(
        insert(ReviewEvent),
        [
            {
                "dataset_id": dataset_id,
                "item_id": r.id,
                "actor_id": principal.user_id,
                "actor": principal.name,
                "action": ReviewAction.restore if action == "restore" else ReviewAction(action),
                "from_status": r.status.value,
                "to_status": target.value,
                "reason": r.filter_reason if action == "restore" else reason,
                "note": note,
                "before": None,
                "after": None,
                "version_after": r.version + 1,  # the rows are locked: the update below makes it so
                "undoes_id": None,
                "bulk_id": bulk_id,
                "created_at": now,
            }
            for r in rows
        ],
    )
    # Last, as in every transition: the update's trigger takes the dataset's count rows until the commit.
    values: dict[str, object] = {"status": target, "version": Item.version + 1}
    values["decided_at"] = now if target is not ItemStatus.pending else None
    if action == "restore":
        values.update(filter_reason=None, duplicate_signal=None)
    session.execute(
        update(Item).where(Item.id.in_(ids)).values(**values).execution_options(synchronize_session=False)
    )
    return len(rows)
