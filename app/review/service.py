"""The review room's entry points: each runs one transaction over the rules in claims, decisions and bulk, and
returns what the router sends (items with their nearest neighbour and its highlighted difference)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.auth.models import User
from app.auth.service import Principal, audit
from app.core.config import Settings
from app.core.db import transaction
from app.core.errors import InvalidFieldError, StaleError
from app.datasets.service import get_dataset, seed_instructions, set_dataset_setting
from app.generation.item_query import Sort, order_by
from app.generation.models import Item
from app.generation.schemas import ItemOut
from app.generation.service import get_item, item_instructions
from app.review import bulk, claims, decisions
from app.review.diff import diff_segments
from app.review.models import ReviewEvent, ReviewResponse
from app.review.progress import dataset_agreement, progress
from app.review.schemas import (
    AgreementOut,
    BulkOut,
    ClaimOut,
    DecisionOut,
    DiffSegmentOut,
    EventOut,
    NeighbourOut,
    PairKappaOut,
    ProgressOut,
    QueueFilters,
    RenewOut,
    ResponseOut,
    ReviewerOut,
    ReviewItemOut,
)
from app.review.settings import ReviewSettings, ReviewSettingsIn, review_settings_of


class StaleItem(Exception):
    """A 409 with the item as it is now (the router turns it into the response)."""

    def __init__(self, message: str, item: ReviewItemOut) -> None:
        super().__init__(message)
        self.item = item


NeighbourTexts = dict[tuple[str, int], str]


def neighbour_texts(session: Session, items: Sequence[Item]) -> NeighbourTexts:
    """The instructions of the items' nearest neighbours (seeds or items), read in at most two queries."""
    texts: NeighbourTexts = {}
    for kind, read in (("seed", seed_instructions), ("item", item_instructions)):
        ids = [i.nearest_id for i in items if i.nearest_kind == kind and i.nearest_id is not None]
        texts.update(((kind, ident), text) for ident, text in read(session, ids).items())
    return texts


def present(items: Sequence[Item], texts: NeighbourTexts) -> list[ReviewItemOut]:
    """Items as a reviewer sees them, with the nearest neighbour and the difference to it. No database work: a
    caller that holds locks reads the texts first and presents after its commit."""
    out = []
    for item in items:
        neighbour = None
        text = texts.get((item.nearest_kind or "", item.nearest_id or 0))
        if text is not None:
            neighbour = NeighbourOut(
                kind=item.nearest_kind,  # type: ignore[arg-type]
                id=item.nearest_id,  # type: ignore[arg-type]
                rouge_l=item.nearest_rouge_l,
                text=text,
                diff=[DiffSegmentOut(op=s.op, text=s.text) for s in diff_segments(text, item.instruction)],
            )
        out.append(ReviewItemOut(**ItemOut.of(item).model_dump(), neighbour=neighbour))
    return out


def present_read(session: Session, items: Sequence[Item]) -> list[ReviewItemOut]:
    return present(items, neighbour_texts(session, items))


def present_one(sessions: sessionmaker[Session], item_id: int) -> ReviewItemOut:
    with sessions() as session:
        return present_read(session, [get_item(session, item_id)])[0]


def _settings_for(session: Session, dataset_id: int, settings: Settings) -> ReviewSettings:
    return review_settings_of(get_dataset(session, dataset_id).settings, settings)


# --- claims ---------------------------------------------------------------------------------------------------


def claim(
    sessions: sessionmaker[Session],
    settings: Settings,
    principal: Principal,
    dataset_id: int,
    *,
    n: int,
    sort: Sort,
    filters: QueueFilters,
) -> ClaimOut:
    with transaction(sessions) as session:
        review = _settings_for(session, dataset_id, settings)
        held = claims.claim(
            session,
            dataset_id,
            principal.user_id,
            n=n,
            overlap=review.overlap,
            lease_seconds=settings.review_lease_seconds,
            query=filters.query(),
            sort=sort,
        )
        # The ones held before come first, in the queue's order, then the new ones (already in that order).
        loaded = list(
            session.scalars(select(Item).where(Item.id.in_(held.item_ids)).order_by(*order_by(sort)))
        )
        fresh = set(held.new_ids)
        new = {i.id: i for i in loaded if i.id in fresh}
        ordered = ([i for i in loaded if i.id not in fresh] + [new[i] for i in held.new_ids if i in new])[:n]
        texts = neighbour_texts(session, ordered)
    # Presented after the commit: diffing holds no lock (SQLite's write lock, PostgreSQL's row locks).
    return ClaimOut(
        items=present(ordered, texts),
        lease_until=held.lease_until,
        lease_seconds=settings.review_lease_seconds,
        reject_reasons=review.reject_reasons,
    )


def renew(
    sessions: sessionmaker[Session],
    settings: Settings,
    principal: Principal,
    dataset_id: int,
    item_ids: list[int] | None,
) -> RenewOut:
    with transaction(sessions) as session:
        review = _settings_for(session, dataset_id, settings)
        held = claims.renew(
            session,
            dataset_id,
            principal.user_id,
            lease_seconds=settings.review_lease_seconds,
            overlap=review.overlap,
            item_ids=item_ids,
        )
    return RenewOut(item_ids=held.item_ids, lease_until=held.lease_until)


def release(
    sessions: sessionmaker[Session], principal: Principal, dataset_id: int, item_ids: list[int]
) -> int:
    with transaction(sessions) as session:
        get_dataset(session, dataset_id)
        return claims.release(session, principal.user_id, item_ids)


# --- decisions ------------------------------------------------------------------------------------------------


def _answer(outcome: decisions.Outcome, texts: NeighbourTexts) -> DecisionOut:
    """What a transition answers, presented after its commit (no lock is held while the diff is computed); the
    item is as the transaction left it (sessions do not expire objects on commit)."""
    return DecisionOut(
        item=present([outcome.item], texts)[0], event_id=outcome.event_id, decided=outcome.decided
    )


def _stale(sessions: sessionmaker[Session], exc: StaleError) -> StaleItem:
    return StaleItem(str(exc), present_one(sessions, exc.item_id))


def decide(
    sessions: sessionmaker[Session],
    settings: Settings,
    principal: Principal,
    item_id: int,
    decision: decisions.Decision,
) -> DecisionOut:
    try:
        with transaction(sessions) as session:
            item, dataset_settings = decisions.lock_item_with_settings(session, item_id)
            review = review_settings_of(dataset_settings, settings)
            texts = neighbour_texts(session, [item])  # before the decision takes the dataset's count rows
            outcome = decisions.decide(session, principal, item, decision, review)
    except StaleError as exc:
        raise _stale(sessions, exc) from exc
    return _answer(outcome, texts)


def undo(
    sessions: sessionmaker[Session], settings: Settings, principal: Principal, dataset_id: int
) -> DecisionOut:
    try:
        with transaction(sessions) as session:
            get_dataset(session, dataset_id)
            outcome = decisions.undo(
                session,
                principal,
                dataset_id,
                window=timedelta(seconds=settings.review_undo_seconds),
                lease_seconds=settings.review_lease_seconds,
            )
            texts = neighbour_texts(session, [outcome.item])
    except StaleError as exc:
        raise _stale(sessions, exc) from exc
    return _answer(outcome, texts)


def restore_or_reopen(
    sessions: sessionmaker[Session],
    principal: Principal,
    item_id: int,
    version: int,
    note: str | None,
    *,
    reopen: bool,
) -> DecisionOut:
    change = decisions.reopen if reopen else decisions.restore
    try:
        with transaction(sessions) as session:
            outcome = change(session, principal, item_id, version, note)
            texts = neighbour_texts(session, [outcome.item])
    except StaleError as exc:
        raise _stale(sessions, exc) from exc
    return _answer(outcome, texts)


def run_bulk(
    sessions: sessionmaker[Session],
    settings: Settings,
    principal: Principal,
    dataset_id: int,
    action: bulk.BulkAction,
    filters: QueueFilters,
    *,
    reason: str | None,
    note: str | None,
    dry_run: bool,
) -> BulkOut:
    query = filters.query()
    with sessions() as session:
        review = _settings_for(session, dataset_id, settings)
        if action == "reject" and reason not in review.reject_reasons:
            raise InvalidFieldError("reason", f"a rejection needs one of: {', '.join(review.reject_reasons)}")
        if dry_run:
            result = bulk.preview_bulk(session, dataset_id, action, query)
            return BulkOut(bulk_id=None, matched=result.matched, changed=0, dry_run=True)
    result = bulk.run_bulk(
        sessions,
        principal,
        dataset_id,
        action,
        query,
        reason=reason if action == "reject" else None,
        note=note,
    )
    return BulkOut(bulk_id=result.bulk_id, matched=result.matched, changed=result.changed, dry_run=False)


# --- settings -------------------------------------------------------------------------------------------------


def set_settings(
    sessions: sessionmaker[Session],
    settings: Settings,
    principal: Principal,
    dataset_id: int,
    body: ReviewSettingsIn,
) -> ReviewSettings:
    """Store the dataset's review settings; the ones in effect. Lowering the overlap concludes, in the same
    transaction, every pending item that already has as many answers as the new overlap asks for."""
    with transaction(sessions) as session:
        dataset = get_dataset(session, dataset_id)
        set_dataset_setting(session, dataset, "review", body.model_dump(exclude_none=True))
        review = review_settings_of(dataset.settings, settings)
        concluded = decisions.conclude_answered(session, principal, dataset_id, review.overlap)
        audit(
            session,
            principal,
            "review.settings",
            f"dataset {dataset_id}",
            settings=review.model_dump(),
            concluded=concluded,
        )
    return review


# --- reading --------------------------------------------------------------------------------------------------


def review_progress(session: Session, settings: Settings, dataset_id: int) -> ProgressOut:
    review = _settings_for(session, dataset_id, settings)
    done = progress(session, dataset_id)
    report = dataset_agreement(session, dataset_id)
    return ProgressOut(
        dataset_id=dataset_id,
        by_status=done.by_status,
        by_reviewer=[
            ReviewerOut(
                user=r.user,
                decisions=r.decisions,
                approved=r.approved,
                rejected=r.rejected,
                edited=r.edited,
                answered=r.answered,
                disputed=r.disputed,
                undone=r.undone,
            )
            for r in done.by_reviewer
        ],
        per_hour=done.per_hour,
        last_hour=done.last_hour,
        bulk=done.bulk,
        settings=review,
        agreement=AgreementOut(
            items=report.items,
            agreeing_items=report.agreeing_items,
            agreement_share=report.agreement_share,
            pairs=[PairKappaOut.model_validate(p, from_attributes=True) for p in report.pairs],
            mean_pairwise_kappa=report.mean_pairwise_kappa,
            fleiss_kappa=report.fleiss_kappa,
            fleiss_items=report.fleiss_items,
            fleiss_raters=report.fleiss_raters,
        ),
    )


def item_events(session: Session, item_id: int) -> list[EventOut]:
    get_item(session, item_id)
    rows = session.scalars(select(ReviewEvent).where(ReviewEvent.item_id == item_id).order_by(ReviewEvent.id))
    return [EventOut.of(e) for e in rows]


def item_responses(session: Session, item_id: int) -> list[ResponseOut]:
    get_item(session, item_id)
    rows = session.execute(
        select(ReviewResponse, User.name)
        .join(User, User.id == ReviewResponse.user_id)
        .where(ReviewResponse.item_id == item_id)
        .order_by(ReviewResponse.id)
    )
    return [ResponseOut.of(response, name) for response, name in rows]
