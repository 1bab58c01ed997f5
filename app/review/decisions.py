"""Review transitions, each one transaction that locks the item, checks its version, changes it and appends an
event:

    pending  --approve / edit-and-approve / reject-->  approved | rejected      (k answers that agree)
    pending  --k answers that disagree-->  disputed  --an admin settles-->  approved | rejected
    filtered --a reviewer restores-->  pending
    approved | rejected | disputed  --an admin reopens-->  pending
    any decision  --its reviewer undoes it (within a window, if nothing happened since)-->  where it was

With k = 1 (the default) every answer decides. A stale version is a StaleError carrying the item as it is now,
so the caller can show it and decide again; nothing is lost.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, exists, func, insert, select
from sqlalchemy.orm import Session

from app.auth.roles import Permission, allows
from app.auth.service import Principal
from app.core.db import utc_now, utcnow
from app.core.errors import ConflictError, ForbiddenError, InvalidFieldError, NotFoundError, StaleError
from app.core.text import storable
from app.datasets.models import Dataset
from app.generation.models import Item, ItemStatus
from app.review import claims
from app.review.claims import drop_claims
from app.review.models import ReviewAction, ReviewClaim, ReviewEvent, ReviewResponse, Verdict
from app.review.settings import ReviewSettings

TEXT_FIELDS = ("instruction", "input", "output")
MAX_FIELD_CHARS = 20_000
MAX_NOTE_CHARS = 2_000
DECIDED = {Verdict.approve: ItemStatus.approved, Verdict.reject: ItemStatus.rejected}


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    version: int
    reason: str | None = None
    note: str | None = None
    edits: dict[str, str] | None = None  # approve only: the fields the reviewer changed


@dataclass(frozen=True, slots=True)
class Outcome:
    item: Item
    event_id: int
    decided: bool  # the item left `pending` (or `disputed`) with this transition


def texts_of(item: Item) -> dict[str, str]:
    return {field: getattr(item, field) for field in TEXT_FIELDS}


def lock_item(session: Session, item_id: int) -> Item:
    """The item, locked for this transaction (PostgreSQL; on SQLite the write transaction holds the lock)."""
    item = session.scalar(
        select(Item).where(Item.id == item_id).with_for_update().execution_options(populate_existing=True)
    )
    if item is None:
        raise NotFoundError(f"item {item_id} not found")
    return item


def lock_item_with_settings(session: Session, item_id: int) -> tuple[Item, dict[str, Any]]:
    """`lock_item`, and its dataset's settings in the same round trip (a decision needs both)."""
    row = session.execute(
        select(Item, Dataset.settings)
        .join(Dataset, Dataset.id == Item.dataset_id)
        .where(Item.id == item_id)
        .with_for_update(of=Item)
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        raise NotFoundError(f"item {item_id} not found")
    return row[0], row[1] or {}


def _check_version(item: Item, version: int) -> None:
    if item.version != version:
        raise StaleError(
            f"item {item.id} changed since you loaded it (your version {version}, now {item.version}); "
            "here it is as it is now",
            item.id,
        )


def clean_edits(item: Item, edits: dict[str, str] | None) -> dict[str, str] | None:
    """The edited fields that differ from the item, cleaned like model output; None when nothing changed."""
    if not edits:
        return None
    changed: dict[str, str] = {}
    for field, value in edits.items():
        if field not in TEXT_FIELDS:
            raise InvalidFieldError(f"edits.{field}", f"only {', '.join(TEXT_FIELDS)} can be edited")
        text = storable(value).strip()
        if len(text) > MAX_FIELD_CHARS:
            raise InvalidFieldError(f"edits.{field}", f"at most {MAX_FIELD_CHARS} characters")
        if not text and field != "input":
            raise InvalidFieldError(f"edits.{field}", "must not be empty")
        if text != getattr(item, field):
            changed[field] = text
    return changed or None


def _check_reason(decision: Decision, settings: ReviewSettings) -> tuple[str | None, str | None]:
    note = _note(decision.note)
    if decision.verdict is Verdict.reject:
        if decision.reason not in settings.reject_reasons:
            raise InvalidFieldError(
                "reason",
                f"a rejection needs one of the dataset's reasons: {', '.join(settings.reject_reasons)}",
            )
        if decision.edits:
            raise InvalidFieldError("edits", "edits go with an approval (edit-and-approve), not a rejection")
        return decision.reason, note
    if decision.reason is not None:
        raise InvalidFieldError("reason", "only a rejection has a reason (use note for a comment)")
    return None, note


def _transition(
    session: Session,
    item: Item,
    actor: Principal,
    action: ReviewAction,
    to_status: ItemStatus,
    *,
    texts: dict[str, str] | None = None,
    reason: str | None = None,
    note: str | None = None,
    undoes_id: int | None = None,
) -> int:
    """Append the event, then change the item: `texts` written into it (the generated text is kept once, in
    `original`), its status set, its version moved on; the event's id.

    The item's update comes last on purpose: its trigger takes the dataset's count rows (item_count), and the
    event's takes the tallies; both are held to the commit and every decision in the dataset needs them, so
    they are taken at the end, and always in this order (no two transitions wait for each other crosswise).
    """
    before = texts_of(item) if texts else None
    after = {**before, **texts} if before is not None and texts else None
    changes = to_status is not item.status or after is not None
    with session.no_autoflush:  # the event goes in first, on its own
        event_id = session.scalar(
            insert(ReviewEvent)
            .values(
                dataset_id=item.dataset_id,
                item_id=item.id,
                actor_id=actor.user_id,
                actor=actor.name,
                action=action,
                from_status=item.status.value,
                to_status=to_status.value,
                reason=reason,
                note=note,
                before=before,
                after=after,
                version_after=item.version + 1 if changes else item.version,
                undoes_id=undoes_id,
                created_at=utcnow(),
            )
            .returning(ReviewEvent.id)
        )
    if changes:
        if after is not None:
            if item.original is None:
                item.original = before
            for field, value in after.items():
                setattr(item, field, value)
            if item.original == after:  # an undo that brought the generated text back
                item.original = None
        if to_status is ItemStatus.pending:
            item.filter_reason = item.duplicate_signal = None
        item.status = to_status
        item.decided_at = utcnow() if to_status in (ItemStatus.approved, ItemStatus.rejected) else None
        session.flush()  # the version moves on here (checked against the locked row)
    assert event_id is not None
    return event_id


# --- answering ------------------------------------------------------------------------------------------------


def decide(
    session: Session, principal: Principal, item: Item, decision: Decision, settings: ReviewSettings
) -> Outcome:
    """A reviewer's answer (or an admin settling a dispute) on an item locked with `lock_item`. See the module
    docstring for the transitions."""
    _check_version(item, decision.version)
    reason, note = _check_reason(decision, settings)
    edits = clean_edits(item, decision.edits)
    if item.status is ItemStatus.disputed:
        return _settle(session, principal, item, decision.verdict, reason, note, edits)
    if item.status is not ItemStatus.pending:
        raise StaleError(f"item {item.id} is {item.status.value}, not waiting for review", item.id)

    holders, answerers = claims.who_works_on(session, item.id)
    if principal.user_id in answerers:
        raise ConflictError(f"you already answered item {item.id}; undo your answer to change it")
    others = len(holders - {principal.user_id})
    if principal.user_id not in holders and others + len(answerers) >= settings.overlap:
        raise StaleError(f"item {item.id} is held by another reviewer now", item.id)
    answers: list[ReviewResponse] = []
    if answerers:  # only with several reviewers per item: their answers decide together with this one
        answers = list(session.scalars(select(ReviewResponse).where(ReviewResponse.item_id == item.id)))

    answer = ReviewResponse(
        item_id=item.id,
        dataset_id=item.dataset_id,
        user_id=principal.user_id,
        verdict=decision.verdict,
        reason=reason,
        note=note,
        edits=edits,
    )
    session.add(answer)
    session.flush()
    answers.append(answer)
    if len(answers) < settings.overlap:
        drop_claims(session, [item.id], user_id=principal.user_id)
        event_id = _transition(
            session, item, principal, ReviewAction.respond, ItemStatus.pending, reason=reason, note=note
        )
        return Outcome(item, event_id, decided=False)
    drop_claims(session, [item.id])
    return Outcome(item, conclude(session, principal, item, answers, note=note), decided=True)


def conclude(
    session: Session, actor: Principal, item: Item, answers: list[ReviewResponse], *, note: str | None = None
) -> int:
    """An item with all the answers it needs: decided if they agree (same verdict, same edits; a rejection
    takes the reason most of them gave), disputed otherwise. The event's id."""
    first = answers[0]
    if len({a.verdict for a in answers}) == 1 and all(a.edits == first.edits for a in answers):
        if first.verdict is Verdict.reject:
            reason = Counter(a.reason for a in answers).most_common(1)[0][0]
            return _transition(
                session, item, actor, ReviewAction.reject, ItemStatus.rejected, reason=reason, note=note
            )
        return _transition(
            session, item, actor, ReviewAction.approve, ItemStatus.approved, texts=first.edits, note=note
        )
    return _transition(session, item, actor, ReviewAction.dispute, ItemStatus.disputed, note=note)


def conclude_answered(session: Session, actor: Principal, dataset_id: int, overlap: int) -> int:
    """Conclude the dataset's pending items that have `overlap` answers or more (the overlap was lowered);
    how many. Locked in id order, as every path that locks several items does."""
    full = (
        select(ReviewResponse.item_id)
        .where(ReviewResponse.dataset_id == dataset_id)
        .group_by(ReviewResponse.item_id)
        .having(func.count() >= overlap)
    )
    items = list(
        session.scalars(
            select(Item)
            .where(Item.id.in_(full), Item.status == ItemStatus.pending)
            .order_by(Item.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )
    if not items:
        return 0
    answers: dict[int, list[ReviewResponse]] = {}
    for answer in session.scalars(
        select(ReviewResponse)
        .where(ReviewResponse.item_id.in_([i.id for i in items]))
        .order_by(ReviewResponse.id)
    ):
        answers.setdefault(answer.item_id, []).append(answer)
    drop_claims(session, [i.id for i in items])
    for item in items:
        conclude(session, actor, item, answers[item.id])
    return len(items)


def _settle(
    session: Session,
    principal: Principal,
    item: Item,
    verdict: Verdict,
    reason: str | None,
    note: str | None,
    edits: dict[str, str] | None,
) -> Outcome:
    if not allows(principal.role, Permission.review_admin):
        raise ForbiddenError(f"item {item.id} is disputed: an admin settles it")
    drop_claims(session, [item.id])
    action = ReviewAction.approve if verdict is Verdict.approve else ReviewAction.reject
    event_id = _transition(
        session, item, principal, action, DECIDED[verdict], texts=edits, reason=reason, note=note
    )
    return Outcome(item, event_id, decided=True)


# --- undo -----------------------------------------------------------------------------------------------------

UNDOABLE = (ReviewAction.approve, ReviewAction.reject, ReviewAction.respond, ReviewAction.dispute)


def last_undoable(
    session: Session, principal: Principal, dataset_id: int, window: timedelta
) -> ReviewEvent | None:
    """This reviewer's latest decision in the dataset that is not undone yet and is recent enough."""
    undone = select(ReviewEvent.undoes_id).where(
        ReviewEvent.actor_id == principal.user_id, ReviewEvent.undoes_id.is_not(None)
    )
    return session.scalar(
        select(ReviewEvent)
        .where(
            ReviewEvent.actor_id == principal.user_id,
            ReviewEvent.dataset_id == dataset_id,
            ReviewEvent.action.in_(UNDOABLE),
            ReviewEvent.bulk_id.is_(None),
            ReviewEvent.created_at > utcnow() - window,
            ReviewEvent.id.not_in(undone),
        )
        .order_by(ReviewEvent.id.desc())
        .limit(1)
    )


def undo(
    session: Session, principal: Principal, dataset_id: int, *, window: timedelta, lease_seconds: float
) -> Outcome:
    """Take back this reviewer's last decision in the dataset: the item returns to where it was (and, when that
    is pending, to this reviewer's hands), provided nothing else happened to it since."""
    last = last_undoable(session, principal, dataset_id, window)
    if last is None:
        raise NotFoundError(
            f"nothing to undo: no decision of yours in the last {int(window.total_seconds() // 60)} min"
        )
    item = lock_item(session, last.item_id)
    # Looked at again once the item is locked: an undo of the same decision that committed meanwhile (two tabs,
    # a double key press) is seen now, and this one stops (an answer that did not decide leaves no version).
    if item.version != last.version_after or session.scalar(
        select(exists().where(ReviewEvent.undoes_id == last.id))
    ):
        raise StaleError(f"item {item.id} changed after your decision; it cannot be undone", item.id)
    if last.from_status == ItemStatus.pending.value:  # the decision was an answer of this reviewer's
        session.execute(
            delete(ReviewResponse)
            .where(ReviewResponse.item_id == item.id, ReviewResponse.user_id == principal.user_id)
            .execution_options(synchronize_session=False)
        )
    to_status = ItemStatus(last.from_status)
    if to_status is ItemStatus.pending:  # back in this reviewer's hands, so the page can show it again
        drop_claims(session, [item.id], user_id=principal.user_id)
        session.execute(
            insert(ReviewClaim.__table__).values(
                item_id=item.id,
                dataset_id=item.dataset_id,
                user_id=principal.user_id,
                lease_until=utc_now(lease_seconds),
            )
        )
    event_id = _transition(
        session, item, principal, ReviewAction.undo, to_status, texts=last.before, undoes_id=last.id
    )
    return Outcome(item, event_id, decided=False)


# --- restore and reopen ---------------------------------------------------------------------------------------


def restore(session: Session, principal: Principal, item_id: int, version: int, note: str | None) -> Outcome:
    """A filtered item goes back to pending (the filter was wrong); the event keeps the reason it had."""
    item = lock_item(session, item_id)
    _check_version(item, version)
    if item.status is not ItemStatus.filtered:
        raise StaleError(
            f"item {item.id} is {item.status.value}; only filtered items can be restored", item.id
        )
    event_id = _transition(
        session,
        item,
        principal,
        ReviewAction.restore,
        ItemStatus.pending,
        reason=item.filter_reason,
        note=_note(note),
    )
    return Outcome(item, event_id, decided=False)


def reopen(session: Session, principal: Principal, item_id: int, version: int, note: str | None) -> Outcome:
    """An admin sends a decided (or disputed) item back to pending; its answers are cleared, the events stay."""
    item = lock_item(session, item_id)
    _check_version(item, version)
    if item.status not in (ItemStatus.approved, ItemStatus.rejected, ItemStatus.disputed):
        raise StaleError(
            f"item {item.id} is {item.status.value}; only decided or disputed items reopen", item.id
        )
    session.execute(
        delete(ReviewResponse)
        .where(ReviewResponse.item_id == item.id)
        .execution_options(synchronize_session=False)
    )
    drop_claims(session, [item.id])
    event_id = _transition(
        session, item, principal, ReviewAction.reopen, ItemStatus.pending, note=_note(note)
    )
    return Outcome(item, event_id, decided=False)


def _note(note: str | None) -> str | None:
    return (storable(note).strip()[:MAX_NOTE_CHARS] or None) if note else None
