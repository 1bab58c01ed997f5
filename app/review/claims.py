"""Claims: which reviewer holds which pending item, until when (database time).

An item needs k reviews (k = the dataset's overlap, 1 by default). It can be claimed while the reviews it has
plus the live claims on it are fewer than k, by a reviewer who has neither answered it nor holds it. A claim
whose lease passed is no longer counted, so the item returns to the pool; its reviewer may still answer it as
long as the item is not full again (see decisions.py), so a lapsed lease loses no work.

Two reviewers never take the same slot. Every path that starts or extends a claim locks the item rows first
and counts live claims only once they are locked (on PostgreSQL, READ COMMITTED gives each statement a fresh
snapshot, so a claimer that committed before the lock was granted is seen):
- claiming locks candidates with FOR UPDATE SKIP LOCKED, so concurrent claimers skip each other's rows instead
  of queueing behind them;
- renewing locks its items in id order (FOR UPDATE), so it waits for a claimer of the same item and then sees it.
On SQLite the write transaction (BEGIN IMMEDIATE) already serializes all of this; the same statements run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import ColumnElement, delete, exists, func, insert, select, update
from sqlalchemy.orm import Session

from app.core.db import utc_now
from app.generation.item_query import ItemQuery, Sort, conditions, order_by
from app.generation.models import Item, ItemStatus
from app.review.models import ReviewClaim, ReviewResponse

# Candidates locked per claim, as a multiple of those wanted: some may fill up between snapshot and lock.
_OVERSAMPLE = 2


@dataclass(frozen=True, slots=True)
class Held:
    item_ids: list[int]  # in the queue's order
    lease_until: datetime | None


def live(claim: type[ReviewClaim] = ReviewClaim) -> ColumnElement[bool]:
    return claim.lease_until > utc_now()


def live_holders(session: Session, item_id: int) -> dict[int, datetime]:
    """Reviewers holding a live claim on an item, with their lease ends."""
    rows = session.execute(
        select(ReviewClaim.user_id, ReviewClaim.lease_until).where(ReviewClaim.item_id == item_id, live())
    )
    return {user_id: lease_until for user_id, lease_until in rows}


def count_answers(session: Session, item_ids: Sequence[int]) -> dict[int, int]:
    rows = session.execute(
        select(ReviewResponse.item_id, func.count())
        .where(ReviewResponse.item_id.in_(list(item_ids)))
        .group_by(ReviewResponse.item_id)
    )
    return dict(rows.all())


def _count_live(session: Session, item_ids: Sequence[int], *, except_user: int) -> dict[int, int]:
    rows = session.execute(
        select(ReviewClaim.item_id, func.count())
        .where(ReviewClaim.item_id.in_(list(item_ids)), ReviewClaim.user_id != except_user, live())
        .group_by(ReviewClaim.item_id)
    )
    return dict(rows.all())


def held_item_ids(session: Session, dataset_id: int, user_id: int, sort: Sort) -> list[int]:
    """Pending items this reviewer holds a live claim on, in the queue's order."""
    # From the reviewer's own claims (a handful, by index), not from the dataset's pending items (thousands).
    query = (
        select(Item.id)
        .join(ReviewClaim, ReviewClaim.item_id == Item.id)
        .where(
            ReviewClaim.user_id == user_id,
            ReviewClaim.dataset_id == dataset_id,
            live(),
            Item.status == ItemStatus.pending,
        )
        .order_by(*order_by(sort))
    )
    return list(session.scalars(query))


def claim(
    session: Session,
    dataset_id: int,
    user_id: int,
    *,
    n: int,
    overlap: int,
    lease_seconds: float,
    query: ItemQuery,
    sort: Sort,
) -> Held:
    """Up to `n` pending items for this reviewer: those they already hold first (so a reloaded page gets its
    items back), then new ones in the queue's order. Every claim they hold in the dataset is renewed first, so
    a lapsed one that nobody took meanwhile is held again and comes back with the others."""
    renewed = renew(session, dataset_id, user_id, lease_seconds=lease_seconds, overlap=overlap)
    held = held_item_ids(session, dataset_id, user_id, sort)
    if len(held) >= n:
        return Held(held[:n], renewed.lease_until)
    held += _claim_new(session, dataset_id, user_id, n - len(held), overlap, lease_seconds, query, sort)
    lease_until = session.scalar(
        select(func.max(ReviewClaim.lease_until)).where(
            ReviewClaim.user_id == user_id, ReviewClaim.item_id.in_(held)
        )
    )
    return Held(held, lease_until)


def _claimable(dataset_id: int, user_id: int, overlap: int, query: ItemQuery) -> list[ColumnElement[bool]]:
    mine = exists().where(ReviewClaim.item_id == Item.id, ReviewClaim.user_id == user_id)
    answered = exists().where(ReviewResponse.item_id == Item.id, ReviewResponse.user_id == user_id)
    where = [*conditions(dataset_id, replace(query, status=ItemStatus.pending)), ~mine, ~answered]
    if overlap == 1:  # the common case as one cheap probe: nobody holds it (and, pending, nobody answered it)
        where.append(~exists().where(ReviewClaim.item_id == Item.id, live()))
    else:
        holders = select(func.count()).where(ReviewClaim.item_id == Item.id, live()).scalar_subquery()
        answers = select(func.count()).where(ReviewResponse.item_id == Item.id).scalar_subquery()
        where.append(holders + answers < overlap)
    return where


def _claim_new(
    session: Session,
    dataset_id: int,
    user_id: int,
    wanted: int,
    overlap: int,
    lease_seconds: float,
    query: ItemQuery,
    sort: Sort,
) -> list[int]:
    candidates = list(
        session.scalars(
            select(Item.id)
            .where(*_claimable(dataset_id, user_id, overlap, query))
            .order_by(*order_by(sort))
            .limit(wanted * _OVERSAMPLE)
            .with_for_update(skip_locked=True, of=Item)
        )
    )
    if not candidates:
        return []
    holders = _count_live(session, candidates, except_user=user_id)
    answers = count_answers(session, candidates)
    chosen = [i for i in candidates if holders.get(i, 0) + answers.get(i, 0) < overlap][:wanted]
    if chosen:
        # A lapsed claim of this reviewer on a chosen item is replaced (one row per reviewer and item).
        session.execute(
            delete(ReviewClaim)
            .where(ReviewClaim.user_id == user_id, ReviewClaim.item_id.in_(chosen))
            .execution_options(synchronize_session=False)
        )
        session.execute(
            insert(ReviewClaim.__table__).values(lease_until=utc_now(lease_seconds)),
            [{"item_id": i, "dataset_id": dataset_id, "user_id": user_id} for i in chosen],
        )
    return chosen


def renew(
    session: Session,
    dataset_id: int,
    user_id: int,
    *,
    lease_seconds: float,
    overlap: int,
    item_ids: Sequence[int] | None = None,
) -> Held:
    """Extend this reviewer's claims in the dataset (or those on `item_ids`). A lapsed claim is extended too,
    unless the item was decided or filled up with other reviewers meanwhile: such claims are dropped."""
    mine = [ReviewClaim.user_id == user_id, ReviewClaim.dataset_id == dataset_id]
    if item_ids is not None:
        mine.append(ReviewClaim.item_id.in_(list(item_ids)))
    claimed = list(session.scalars(select(ReviewClaim.item_id).where(*mine)))
    if not claimed:
        return Held([], None)
    pending = list(
        session.scalars(
            select(Item.id)
            .where(Item.id.in_(claimed), Item.status == ItemStatus.pending)
            .order_by(Item.id)
            .with_for_update(of=Item)
        )
    )
    holders = _count_live(session, pending, except_user=user_id)
    answers = count_answers(session, pending)
    keep = [i for i in pending if holders.get(i, 0) + answers.get(i, 0) < overlap]
    lease_until = None
    if keep:
        lease_until = (
            session.execute(
                update(ReviewClaim)
                .where(ReviewClaim.user_id == user_id, ReviewClaim.item_id.in_(keep))
                .values(lease_until=utc_now(lease_seconds))
                .returning(ReviewClaim.lease_until)
                .execution_options(synchronize_session=False)
            )
            .scalars()
            .first()
        )
    gone = set(claimed) - set(keep)
    if gone:
        drop_claims(session, sorted(gone), user_id=user_id)
    return Held(keep, lease_until)


def release(session: Session, user_id: int, item_ids: Sequence[int]) -> int:
    """Give items back to the pool before the lease ends (a reviewer skipping them)."""
    result = session.execute(
        delete(ReviewClaim)
        .where(ReviewClaim.user_id == user_id, ReviewClaim.item_id.in_(list(item_ids)))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def drop_claims(session: Session, item_ids: Sequence[int], *, user_id: int | None = None) -> None:
    """Claims end when an item is decided (everyone's) or answered (the answering reviewer's)."""
    where = [ReviewClaim.item_id.in_(list(item_ids))]
    if user_id is not None:
        where.append(ReviewClaim.user_id == user_id)
    session.execute(delete(ReviewClaim).where(*where).execution_options(synchronize_session=False))
