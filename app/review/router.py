"""The review queue over HTTP: claim, renew, release, decide, undo, restore, reopen, bulk, progress, history.

A stale decision (the item changed since the reviewer loaded it) is a 409 whose body carries the item as it is
now: {"detail": "...", "item": {...}}.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from app.api.deps import ReadSession, SessionFactoryDep, SettingsDep
from app.auth.deps import DatasetManager, Reader, ReviewAdmin, Reviewer
from app.datasets.service import get_dataset
from app.review import service
from app.review.decisions import Decision
from app.review.schemas import (
    BulkOut,
    BulkRequest,
    ClaimOut,
    ClaimRequest,
    DecisionOut,
    DecisionRequest,
    EventOut,
    ProgressOut,
    ReleaseRequest,
    RenewOut,
    RenewRequest,
    ResponseOut,
    TransitionRequest,
)
from app.review.settings import ReviewSettings, ReviewSettingsIn

router = APIRouter(prefix="/v1", tags=["review"])
STALE = {409: {"description": "The item changed since you loaded it; the body holds it as it is now."}}


def stale_response(exc: service.StaleItem) -> JSONResponse:
    return JSONResponse(
        status_code=409, content={"detail": str(exc), "item": exc.item.model_dump(mode="json")}
    )


@router.post("/datasets/{dataset_id}/review/claim", response_model=ClaimOut)
def claim(
    principal: Reviewer,
    dataset_id: int,
    body: ClaimRequest,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
) -> ClaimOut:
    """Hold up to n pending items for a renewable lease (those you already hold come first)."""
    return service.claim(
        sessions, settings, principal, dataset_id, n=body.n, sort=body.sort, filters=body.filters
    )


@router.post("/datasets/{dataset_id}/review/renew", response_model=RenewOut)
def renew(
    principal: Reviewer,
    dataset_id: int,
    body: RenewRequest,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
) -> RenewOut:
    """Extend your leases; an item missing from the answer is no longer yours (decided, or taken after a lapse)."""
    return service.renew(sessions, settings, principal, dataset_id, body.item_ids)


@router.post("/datasets/{dataset_id}/review/release", status_code=status.HTTP_204_NO_CONTENT)
def release(
    principal: Reviewer, dataset_id: int, body: ReleaseRequest, sessions: SessionFactoryDep
) -> Response:
    """Give items back to the pool before their lease ends."""
    service.release(sessions, principal, dataset_id, body.item_ids)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/datasets/{dataset_id}/review/undo", response_model=DecisionOut, responses=STALE)
def undo(
    principal: Reviewer, dataset_id: int, sessions: SessionFactoryDep, settings: SettingsDep
) -> DecisionOut | JSONResponse:
    """Take back your last decision in this dataset (within the undo window, if nothing happened to it since)."""
    try:
        return service.undo(sessions, settings, principal, dataset_id)
    except service.StaleItem as exc:
        return stale_response(exc)


@router.post("/items/{item_id}/review", response_model=DecisionOut, responses=STALE)
def decide(
    principal: Reviewer,
    item_id: int,
    body: DecisionRequest,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
) -> DecisionOut | JSONResponse:
    """Approve, edit-and-approve, or reject (with one of the dataset's reasons) one item."""
    decision = Decision(
        verdict=body.decision,
        version=body.version,
        reason=body.reason,
        note=body.note,
        edits=body.edits.changed() if body.edits is not None else None,
    )
    try:
        return service.decide(sessions, settings, principal, item_id, decision)
    except service.StaleItem as exc:
        return stale_response(exc)


@router.post("/items/{item_id}/restore", response_model=DecisionOut, responses=STALE)
def restore(
    principal: Reviewer, item_id: int, body: TransitionRequest, sessions: SessionFactoryDep
) -> DecisionOut | JSONResponse:
    """Send a filtered item back to the queue (the filter was wrong)."""
    try:
        return service.restore_or_reopen(sessions, principal, item_id, body.version, body.note, reopen=False)
    except service.StaleItem as exc:
        return stale_response(exc)


@router.post("/items/{item_id}/reopen", response_model=DecisionOut, responses=STALE)
def reopen(
    principal: ReviewAdmin, item_id: int, body: TransitionRequest, sessions: SessionFactoryDep
) -> DecisionOut | JSONResponse:
    """Send a decided or disputed item back to the queue (admins)."""
    try:
        return service.restore_or_reopen(sessions, principal, item_id, body.version, body.note, reopen=True)
    except service.StaleItem as exc:
        return stale_response(exc)


@router.post("/datasets/{dataset_id}/review/bulk", response_model=BulkOut)
def bulk(
    principal: ReviewAdmin,
    dataset_id: int,
    body: BulkRequest,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
) -> BulkOut:
    """Approve, reject or restore every item the filters match (the whole query, not a page); `dry_run` counts."""
    return service.run_bulk(
        sessions,
        settings,
        principal,
        dataset_id,
        body.action,
        body.filters,
        reason=body.reason,
        note=body.note,
        dry_run=body.dry_run,
    )


@router.put("/datasets/{dataset_id}/review/settings", response_model=ReviewSettings)
def put_settings(
    principal: DatasetManager,
    dataset_id: int,
    body: ReviewSettingsIn,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
) -> ReviewSettings:
    """Set how many reviewers answer each item (overlap) and the reasons a rejection picks from (left out: the
    service's defaults); the settings in effect. Lowering the overlap concludes the items that have enough
    answers now."""
    return service.set_settings(sessions, settings, principal, dataset_id, body)


@router.get("/datasets/{dataset_id}/review/progress", response_model=ProgressOut)
def progress(_: Reader, dataset_id: int, session: ReadSession, settings: SettingsDep) -> ProgressOut:
    """Items by status, decisions by reviewer and per hour, and agreement between reviewers."""
    get_dataset(session, dataset_id)
    return service.review_progress(session, settings, dataset_id)


@router.get("/items/{item_id}/events", response_model=list[EventOut])
def events(_: Reader, item_id: int, session: ReadSession) -> list[EventOut]:
    """Every transition of the item, oldest first, with the text before and after each edit."""
    return service.item_events(session, item_id)


@router.get("/items/{item_id}/responses", response_model=list[ResponseOut])
def responses(_: ReviewAdmin, item_id: int, session: ReadSession) -> list[ResponseOut]:
    """Each reviewer's answer to the item, side by side (admins: settling disputes)."""
    return service.item_responses(session, item_id)
