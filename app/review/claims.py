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

from sqlalchemy import ColumnElement, delete, exists, func, insert, literal, select, union_all, update
from sqlalchemy.orm import Session

from app.core.db import utc_now
from app.generation.item_query import ItemQuery, Sort, conditions, order_by
from app.generation.models import Item, ItemStatus
from app.review.models import ReviewClaim, ReviewResponse

# Candidates locked per claim, as a multiple of those wanted: some may fill up between snapshot and lock.
_OVERSAMPLE = 2


@dataclass(frozen=True, slots=True)
class Held:
    item_ids: list[int]
    lease_until: datetime | None
    new_ids: tuple[int, ...] = ()  # those claimed just now (in the queue's order), a claim's answer


def live() -> ColumnElement[bool]:
    return ReviewClaim.lease_until > utc_now()


def who_works_on(session: Session, item_id: int) -> tuple[set[int], set[int]]:
    """The reviewers holding a live claim on an item, and those who answered it (one query)."""
    holding = select(literal("claim").label("what"), ReviewClaim.user_id).where(
        ReviewClaim.item_id == item_id, live()
    )
    answered = select(literal("answer").label("what"), ReviewResponse.user_id).where(
        ReviewResponse.item_id == item_id
    )
    holders: set[int] = set()
    answerers: set[int] = set()
    for what, user_id in session.execute(union_all(holding, answered)):
        (holders if what == "claim" else answerers).add(user_id)
    return holders, answerers


def _taken(session: Session, item_ids: Sequence[int], *, user_id: int) -> tuple[dict[int, int], set[int]]:
    """Per item: live claims of other reviewers plus answers (what counts against its k slots); and the items
    this reviewer holds a claim on already (a claim of theirs that committed after the candidates were read: two
    tabs claiming at once). One query."""
    if not item_ids:
        return {}, set()
    ids = list(item_ids)
    others = select(ReviewClaim.item_id, literal(False).label("mine")).where(
        ReviewClaim.item_id.in_(ids), ReviewClaim.user_id != user_id, live()
    )
    answered = select(ReviewResponse.item_id, literal(False).label("mine")).where(
        ReviewResponse.item_id.in_(ids)
    )
    held = select(ReviewClaim.item_id, literal(True).label("mine")).where(
        ReviewClaim.item_id.in_(ids), ReviewClaim.user_id == user_id
    )
    rows = union_all(others, answered, held).subquery()
    taken: dict[int, int] = {}
    mine: set[int] = set()
    for item_id, is_mine, count in session.execute(
        select(rows.c.item_id, rows.c.mine, func.count()).group_by(rows.c.item_id, rows.c.mine)
    ):
        if is_mine:
            mine.add(item_id)
        else:
            taken[item_id] = count
    return taken, mine


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
    """Pending items for this reviewer: all those they already hold (so a reloaded page gets its items back; the
    caller puts them in the queue's order), then new ones in the queue's order up to `n` in all. Every claim they
    hold in the dataset is renewed first, so a lapsed one that nobody took meanwhile is held again."""
    renewed = renew(session, dataset_id, user_id, lease_seconds=lease_seconds, overlap=overlap)
    held = renewed.item_ids
    if len(held) >= n:
        return Held(held, renewed.lease_until)
    new, lease_until = _claim_new(
        session, dataset_id, user_id, n - len(held), overlap, lease_seconds, query, sort
    )
    latest = max((t for t in (renewed.lease_until, lease_until) if t is not None), default=None)
    return Held(held + new, latest, tuple(new))


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
) -> tuple[list[int], datetime | None]:
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
        return [], None
    taken, mine = _taken(session, candidates, user_id=user_id)
    chosen = [i for i in candidates if taken.get(i, 0) < overlap and i not in mine][:wanted]
    if chosen:
        lease_until = session.scalar(
            insert(ReviewClaim.__table__)
            .values(lease_until=utc_now(lease_seconds))
            .returning(ReviewClaim.__table__.c.lease_until),
            [{"item_id": i, "dataset_id": dataset_id, "user_id": user_id} for i in chosen],
        )
        return chosen, lease_until
    return [], None


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
    taken, _ = _taken(session, pending, user_id=user_id)
    keep = [i for i in pending if taken.get(i, 0) < overlap]
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
