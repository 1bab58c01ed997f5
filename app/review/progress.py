"""How a dataset's review is going: items by status, decisions by reviewer and by hour, and agreement.

Counts by status come from `item_count` (kept by database triggers, see migration 0003), so they cost the same
at 50 items and at 50 million. Decisions are counted from the event log, net of undos; bulk actions are an
admin's, shown apart from reviewers' work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import String, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import FunctionElement

from app.auth.models import User
from app.core.db import utcnow
from app.generation.models import ItemStatus
from app.generation.service import counts_by_dataset
from app.review.agreement import AgreementReport, Rating, agreement
from app.review.models import ReviewAction, ReviewEvent, ReviewResponse

DECISIONS = (ReviewAction.approve, ReviewAction.reject, ReviewAction.respond, ReviewAction.dispute)


class hour_of(FunctionElement[str]):  # noqa: N801 (reads like the SQL it renders)
    """The start of the hour a timestamp falls in (UTC), as text "YYYY-MM-DD HH:00" on every database (typed as
    text, so no driver turns it into a datetime that the hour labels would not match)."""

    type = String()
    inherit_cache = True


@compiles(hour_of, "sqlite")
def _hour_sqlite(element: hour_of, compiler: Any, **kw: Any) -> str:
    return f"strftime('%Y-%m-%d %H:00', {compiler.process(element.clauses, **kw)})"


@compiles(hour_of, "postgresql")
def _hour_postgresql(element: hour_of, compiler: Any, **kw: Any) -> str:
    return f"to_char(date_trunc('hour', {compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC'), 'YYYY-MM-DD HH24:MI')"


@dataclass(slots=True)
class ReviewerProgress:
    user: str
    approved: int = 0
    rejected: int = 0
    edited: int = 0
    answered: int = 0  # answers that did not decide alone (overlap > 1)
    disputed: int = 0  # answers that left the item disputed
    undone: int = 0

    @property
    def decisions(self) -> int:
        return self.approved + self.rejected + self.answered + self.disputed


@dataclass(slots=True)
class Progress:
    by_status: dict[str, int]
    by_reviewer: list[ReviewerProgress]
    per_hour: list[tuple[str, int]]  # ("YYYY-MM-DD HH:00" UTC, decisions), the last 24 hours, oldest first
    last_hour: int
    bulk: dict[str, int] = field(default_factory=dict)  # items changed by bulk actions, by action


def status_counts(session: Session, dataset_ids: list[int]) -> dict[int, dict[str, int]]:
    counts = counts_by_dataset(session, dataset_ids)
    return {i: {s.value: counts[i][s.value] for s in ItemStatus} for i in dataset_ids}


def progress(session: Session, dataset_id: int) -> Progress:
    reviewers: dict[str, ReviewerProgress] = {}

    def row(name: str) -> ReviewerProgress:
        return reviewers.setdefault(name, ReviewerProgress(name))

    kinds = {
        ReviewAction.approve: "approved",
        ReviewAction.reject: "rejected",
        ReviewAction.respond: "answered",
        ReviewAction.dispute: "disputed",
    }
    base = [
        ReviewEvent.dataset_id == dataset_id,
        ReviewEvent.action.in_(DECISIONS),
        ReviewEvent.bulk_id.is_(None),
    ]
    for actor, action, n in session.execute(
        select(ReviewEvent.actor, ReviewEvent.action, func.count())
        .where(*base)
        .group_by(ReviewEvent.actor, ReviewEvent.action)
    ):
        setattr(row(actor), kinds[action], getattr(row(actor), kinds[action]) + n)
    for actor, n in session.execute(
        select(ReviewEvent.actor, func.count())
        .where(*base, ReviewEvent.after.is_not(None))
        .group_by(ReviewEvent.actor)
    ):
        row(actor).edited += n
    undone = aliased(ReviewEvent)
    for actor, action, was_edit, n in session.execute(
        select(undone.actor, undone.action, undone.after.is_not(None), func.count())
        .join(ReviewEvent, ReviewEvent.undoes_id == undone.id)
        .where(ReviewEvent.dataset_id == dataset_id, ReviewEvent.action == ReviewAction.undo)
        .group_by(undone.actor, undone.action, undone.after.is_not(None))
    ):
        target = row(actor)
        setattr(target, kinds[action], getattr(target, kinds[action]) - n)
        target.undone += n
        if was_edit:
            target.edited -= n
    bulk = dict(
        session.execute(
            select(ReviewEvent.action, func.count())
            .where(ReviewEvent.dataset_id == dataset_id, ReviewEvent.bulk_id.is_not(None))
            .group_by(ReviewEvent.action)
        ).all()
    )
    since = utcnow() - timedelta(hours=24)
    hours = dict(
        session.execute(
            select(hour_of(ReviewEvent.created_at), func.count())
            .where(*base, ReviewEvent.created_at > since)
            .group_by(hour_of(ReviewEvent.created_at))
        ).all()
    )
    now = utcnow()
    labels = [(now - timedelta(hours=h)).strftime("%Y-%m-%d %H:00") for h in range(23, -1, -1)]
    per_hour = [(label, int(hours.get(label, 0))) for label in labels]
    last_hour = (
        session.scalar(
            select(func.count())
            .select_from(ReviewEvent)
            .where(*base, ReviewEvent.created_at > now - timedelta(hours=1))
        )
        or 0
    )
    return Progress(
        by_status=status_counts(session, [dataset_id])[dataset_id],
        by_reviewer=sorted(reviewers.values(), key=lambda r: (-r.decisions, r.user)),
        per_hour=per_hour,
        last_hour=last_hour,
        bulk={str(getattr(k, "value", k)): v for k, v in bulk.items()},
    )


def dataset_agreement(session: Session, dataset_id: int) -> AgreementReport:
    """Agreement between reviewers over the items that more than one of them answered."""
    shared = (
        select(ReviewResponse.item_id)
        .where(ReviewResponse.dataset_id == dataset_id)
        .group_by(ReviewResponse.item_id)
        .having(func.count() > 1)
    )
    rows = session.execute(
        select(ReviewResponse.item_id, User.name, ReviewResponse.verdict, ReviewResponse.edits)
        .join(User, User.id == ReviewResponse.user_id)
        .where(ReviewResponse.dataset_id == dataset_id, ReviewResponse.item_id.in_(shared))
    )
    ratings = [
        Rating(item_id, user, verdict.value, _canonical(edits)) for item_id, user, verdict, edits in rows
    ]
    return agreement(ratings)


def _canonical(edits: dict[str, str] | None) -> str | None:
    if not edits:
        return None
    return json.dumps(edits, sort_keys=True, ensure_ascii=False)
