"""How a dataset's review is going: items by status, decisions by reviewer and by hour, and agreement.

Everything comes from counts that database triggers keep (migration 0003): items by status in `item_count`,
decisions by reviewer (net of undos) in `review_tally`, decisions per hour in `review_hourly`. So the page costs
the same at 50 items and at 50 million, and after a million decisions. Bulk actions are an admin's, shown apart
from reviewers' work. Agreement is computed from the answers only when some item had several.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.core.db import utcnow
from app.generation.models import ItemStatus
from app.generation.service import item_counts
from app.review.agreement import AgreementReport, Rating, agreement
from app.review.models import ReviewAction, ReviewEvent, ReviewHourly, ReviewResponse, ReviewTally

DECISIONS = (ReviewAction.approve, ReviewAction.reject, ReviewAction.respond, ReviewAction.dispute)
# Tallied actions and the reviewer's count they add to (an undo is tallied too, and taken off what it undid).
KINDS = {
    ReviewAction.approve.value: "approved",
    ReviewAction.reject.value: "rejected",
    ReviewAction.respond.value: "answered",
    ReviewAction.dispute.value: "disputed",
    ReviewAction.undo.value: "undone",
}


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
    counts = item_counts(session, dataset_ids)
    return {i: {s.value: counts[i][s.value] for s in ItemStatus} for i in dataset_ids}


def progress(session: Session, dataset_id: int) -> Progress:
    """Read from the trigger-kept tallies (and, for the last hour, the events of that hour only)."""
    reviewers: dict[str, ReviewerProgress] = {}
    bulk: dict[str, int] = {}
    for actor, action, was_bulk, edited, n in session.execute(
        select(
            ReviewTally.actor, ReviewTally.action, ReviewTally.bulk, ReviewTally.edited, ReviewTally.n
        ).where(ReviewTally.dataset_id == dataset_id)
    ):
        if was_bulk:
            bulk[action] = bulk.get(action, 0) + n
            continue
        row = reviewers.setdefault(actor, ReviewerProgress(actor))
        if action in KINDS:
            setattr(row, KINDS[action], getattr(row, KINDS[action]) + n)
            if edited and action != ReviewAction.undo.value:  # an undo of an edit carries the texts back
                row.edited += n
    now = utcnow()
    labels = [(now - timedelta(hours=h)).strftime("%Y-%m-%d %H:00") for h in range(23, -1, -1)]
    hours = dict(
        session.execute(
            select(ReviewHourly.hour, func.sum(ReviewHourly.n))
            .where(ReviewHourly.dataset_id == dataset_id, ReviewHourly.hour >= labels[0])
            .group_by(ReviewHourly.hour)
        ).all()
    )
    last_hour = (
        session.scalar(
            select(func.count())
            .select_from(ReviewEvent)
            .where(
                ReviewEvent.dataset_id == dataset_id,
                ReviewEvent.created_at > now - timedelta(hours=1),
                ReviewEvent.action.in_(DECISIONS),
                ReviewEvent.bulk_id.is_(None),
            )
        )
        or 0
    )
    return Progress(
        by_status=status_counts(session, [dataset_id])[dataset_id],
        by_reviewer=sorted(
            (r for r in reviewers.values() if r.decisions or r.undone), key=lambda r: (-r.decisions, r.user)
        ),
        per_hour=[(label, int(hours.get(label, 0))) for label in labels],
        last_hour=last_hour,
        bulk={action: n for action, n in bulk.items() if n},
    )


def dataset_agreement(session: Session, dataset_id: int) -> AgreementReport:
    """Agreement between reviewers over the items that more than one of them answered.

    An item answered twice had a first answer that did not decide it (a "respond", or a "dispute"), so a
    dataset whose tallies hold none has nothing to compare and its answers are not read at all."""
    several = session.scalar(
        select(func.coalesce(func.sum(ReviewTally.n), 0)).where(
            ReviewTally.dataset_id == dataset_id,
            ReviewTally.action.in_([ReviewAction.respond.value, ReviewAction.dispute.value]),
        )
    )
    if not several:
        return agreement([])
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
