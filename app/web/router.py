"""The reviewer UI: login, datasets, a dataset's progress, the review page, the queue, one item's page and the
jobs page.

Pages are Jinja2 templates with autoescaping (model output and user text are always text, never markup) and a
little hand-written JavaScript that calls the JSON API with the session's CSRF token. A page asked for without
a session answers 401 with the login form, which brings the reviewer back to where they were.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.api.deps import ReadSession, SessionFactoryDep, SettingsDep
from app.auth.deps import SESSION_COOKIE, Public, require
from app.auth.roles import Permission, allows
from app.auth.service import (
    LoginError,
    LoginRateLimitedError,
    Principal,
    begin_login,
    check_password,
    logout,
    open_session,
)
from app.core.db import transaction
from app.core.errors import InvalidFieldError
from app.core.security import new_secret, same_secret
from app.datasets.service import get_dataset, list_datasets
from app.generation import item_query
from app.generation.filters import FilterReason
from app.generation.models import DUPLICATE_SIGNALS, ItemStatus
from app.generation.service import get_item
from app.jobs.listing import parse_kinds, parse_statuses
from app.jobs.models import JobStatus
from app.jobs.schemas import JOB_KINDS
from app.reports.language import LANGUAGES
from app.review import service as review
from app.review.decisions import TEXT_FIELDS
from app.review.diff import diff_segments
from app.review.progress import status_counts
from app.review.schemas import QueueFilters
from app.review.settings import review_settings_of

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
STATIC_DIR = Path(__file__).parent / "static"
LOGIN_COOKIE = "sprout_login"  # the login form's CSRF token (double submit): no session exists yet
PAGE_SIZE = 50

router = APIRouter(include_in_schema=False)


class LoginRequired(Exception):
    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


class PageForbidden(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


def page(permission: Permission) -> Any:
    """Like auth.deps.require, but a missing session shows the login form and a wrong role an error page."""
    check = require(permission)

    async def dependency(request: Request) -> Principal:
        try:
            return await check(request)
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            if status == 401:  # back to this page after logging in (a form post goes back to the datasets)
                raise LoginRequired(_here(request) if request.method == "GET" else "/ui") from exc
            if status == 403:
                raise PageForbidden(getattr(exc, "detail", "forbidden")) from exc
            raise

    dependency.permission = permission  # type: ignore[attr-defined]
    return Depends(dependency)


PageReader = Annotated[Principal, page(Permission.read)]
PageReviewer = Annotated[Principal, page(Permission.review)]


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never //host or a scheme): an open redirect would hand sessions to others."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui"


def render(
    request: Request, template: str, principal: Principal | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(
        request, template, {"principal": principal, **context}, status_code=status_code
    )


def login_page(
    request: Request,
    *,
    next_url: str,
    message: str | None = None,
    name: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    token = new_secret()
    response = render(
        request,
        "login.html",
        None,
        status_code,
        login_csrf=token,
        next=_safe_next(next_url),
        message=message,
        name=name,
    )
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", path="/login", max_age=3600)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    return render(request, "error.html", principal, status_code, title=title, message=message)


def _can(principal: Principal, permission: Permission) -> bool:
    return allows(principal.role, permission)


# --- login ---------------------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse, dependencies=[Public])
def login_form(request: Request, next: str = "/ui") -> HTMLResponse:
    return login_page(request, next_url=next)


@router.post("/login", dependencies=[Public])
def login_submit(
    request: Request,
    sessions: SessionFactoryDep,
    settings: SettingsDep,
    name: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/ui",
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not same_secret(csrf_token, expected):
        return login_page(
            request, next_url=next, message="The form expired; please log in again.", status_code=403
        )
    if not name.strip() or not password:
        return login_page(
            request, next_url=next, message="Enter your name and password.", name=name, status_code=401
        )
    client = request.client.host if request.client else "unknown"
    try:
        with transaction(sessions) as session:
            attempt = begin_login(
                session,
                name.strip().lower(),
                client,
                window=settings.login_window,
                per_name=settings.login_max_failures,
                per_client=settings.login_max_failures_per_client,
            )
        with sessions() as session:
            user_id, new_hash = check_password(session, name, password)
    except LoginRateLimitedError as exc:
        response = login_page(request, next_url=next, message=str(exc), name=name, status_code=429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except LoginError as exc:  # the attempt stays recorded as a failure
        return login_page(request, next_url=next, message=str(exc), name=name, status_code=401)
    with transaction(sessions) as session:
        cookie, _ = open_session(
            session,
            user_id,
            new_hash,
            attempt,
            lifetime=settings.session_lifetime,
            forget_after=settings.login_window,
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
        max_age=int(settings.session_lifetime.total_seconds()),
        path="/",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout_submit(request: Request, principal: PageReader, sessions: SessionFactoryDep) -> Response:
    with transaction(sessions) as session:
        logout(session, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/", dependencies=[Public])
def home() -> Response:
    return RedirectResponse("/ui", status_code=303)


# --- pages ---------------------------------------------------------------------------------------------------


@router.get("/ui", response_class=HTMLResponse)
def datasets_page(request: Request, principal: PageReader, session: ReadSession) -> HTMLResponse:
    datasets = list_datasets(session)
    counts = status_counts(session, [d.id for d in datasets])
    rows = [{"id": d.id, "name": d.name, "counts": counts[d.id]} for d in datasets]
    return render(
        request,
        "datasets.html",
        principal,
        datasets=rows,
        statuses=[s.value for s in ItemStatus],
        can_review=_can(principal, Permission.review),
    )


@router.get("/ui/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_page(
    request: Request, principal: PageReader, dataset_id: int, session: ReadSession, settings: SettingsDep
) -> HTMLResponse:
    dataset = get_dataset(session, dataset_id)
    progress = review.review_progress(session, settings, dataset_id)
    return render(
        request,
        "dataset.html",
        principal,
        dataset=dataset,
        progress=progress,
        total=sum(progress.by_status.values()),
        peak=max((n for _, n in progress.per_hour), default=0),
        can_review=_can(principal, Permission.review),
        can_review_admin=_can(principal, Permission.review_admin),
    )


@router.get("/ui/datasets/{dataset_id}/review", response_class=HTMLResponse)
def review_page(
    request: Request,
    principal: PageReviewer,
    dataset_id: int,
    session: ReadSession,
    sort: Annotated[item_query.Sort, Query()] = "doubtful",
) -> HTMLResponse:
    return render(request, "review.html", principal, dataset=get_dataset(session, dataset_id), sort=sort)


def _queue_filters(
    status: Annotated[str | None, Query()] = None,
    job_id: Annotated[str | None, Query()] = None,
    language: Annotated[str | None, Query()] = None,
    filter_reason: Annotated[str | None, Query()] = None,
    duplicate_signal: Annotated[str | None, Query()] = None,
    q: Annotated[str | None, Query()] = None,
) -> QueueFilters:
    """The filter form's values; an empty field means "any" (HTML forms send empty strings)."""
    values = {
        "status": status,
        "job_id": job_id,
        "language": language,
        "filter_reason": filter_reason,
        "duplicate_signal": duplicate_signal,
        "q": q,
    }
    try:
        return QueueFilters.model_validate({k: v for k, v in values.items() if v not in (None, "")})
    except ValueError as exc:
        raise InvalidFieldError("query", str(exc)) from exc


@router.get("/ui/datasets/{dataset_id}/queue", response_class=HTMLResponse)
def queue_page(
    request: Request,
    principal: PageReader,
    dataset_id: int,
    session: ReadSession,
    settings: SettingsDep,
    filters: Annotated[QueueFilters, Depends(_queue_filters)],
    sort: Annotated[item_query.Sort, Query()] = "oldest",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    dataset = get_dataset(session, dataset_id)
    items, next_cursor = item_query.page(
        session, dataset_id, filters.query(), sort=sort, cursor=cursor, limit=PAGE_SIZE
    )
    params = {**filters.model_dump(mode="json", exclude_none=True), "sort": sort}
    return render(
        request,
        "queue.html",
        principal,
        dataset=dataset,
        items=items,
        counts=status_counts(session, [dataset_id])[dataset_id],
        filters=filters,
        filters_json=json.dumps(filters.model_dump(mode="json", exclude_none=True)),
        sort=sort,
        sorts=item_query.SORTS,
        statuses=[s.value for s in ItemStatus],
        languages=LANGUAGES,
        filter_reasons=["near_duplicate", *(r.value for r in FilterReason), "over_count"],
        signals=DUPLICATE_SIGNALS,
        reject_reasons=review_settings_of(dataset.settings, settings).reject_reasons,
        cursor=cursor,
        next_cursor=next_cursor,
        next_query=urlencode({**params, "cursor": next_cursor}) if next_cursor else "",
        first_query=urlencode(params),
        can_review=_can(principal, Permission.review),
        can_review_admin=_can(principal, Permission.review_admin),
    )


@router.get("/ui/items/{item_id}", response_class=HTMLResponse)
def item_page(
    request: Request, principal: PageReader, item_id: int, session: ReadSession, settings: SettingsDep
) -> HTMLResponse:
    item = get_item(session, item_id)
    dataset = get_dataset(session, item.dataset_id)
    view = review.present_read(session, [item])[0]
    events = []
    for event in review.item_events(session, item_id):
        diffs = []
        if event.before and event.after:
            diffs = [
                (f, diff_segments(str(event.before.get(f, "")), str(event.after.get(f, ""))))
                for f in TEXT_FIELDS
                if event.before.get(f) != event.after.get(f)
            ]
        events.append({**event.model_dump(), "created_at": event.created_at, "diffs": diffs})
    original_diffs = []
    if item.original:
        original_diffs = [
            (f, diff_segments(item.original.get(f, ""), getattr(item, f)))
            for f in TEXT_FIELDS
            if item.original.get(f) != getattr(item, f)
        ]
    can_admin = _can(principal, Permission.review_admin)
    return render(
        request,
        "item.html",
        principal,
        item=item,
        dataset=dataset,
        view=view,
        events=events,
        original_diffs=original_diffs,
        responses=review.item_responses(session, item_id) if can_admin else [],
        reject_reasons=review_settings_of(dataset.settings, settings).reject_reasons,
        can_review=_can(principal, Permission.review),
        can_review_admin=can_admin,
    )


@router.get("/ui/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    principal: PageReader,
    session: ReadSession,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[str | None, Query(max_length=40)] = None,
    dataset_id: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    """Generation and fine-tuning jobs with live progress: static/jobs.js polls GET /v1/jobs. The filters are a
    plain GET form (an empty field means "any"); "active" stands for queued or running."""
    kind = kind or None
    if kind is not None and len(parse_kinds(kind)) != 1:
        raise InvalidFieldError("kind", "one kind, or none for both", location="query")
    status = status or None
    if status is not None and status != "active":
        parse_statuses([status])
    if dataset_id:
        if not dataset_id.isdigit() or len(dataset_id) > 18:
            raise InvalidFieldError("dataset_id", "a dataset id (a number)", location="query")
        get_dataset(session, int(dataset_id))
    can_cancel = [
        k
        for k, p in (("generation", Permission.generate), ("fine_tune", Permission.finetune))
        if _can(principal, p)
    ]
    return render(
        request,
        "jobs.html",
        principal,
        datasets=[{"id": d.id, "name": d.name} for d in list_datasets(session)],
        kinds=JOB_KINDS,
        statuses=[s.value for s in JobStatus],
        kind=kind or "",
        status=status or "",
        dataset_id=dataset_id or "",
        can_cancel=" ".join(can_cancel),
    )
