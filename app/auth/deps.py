"""Who may call a route: every route declares one permission (or `public`), checked before it runs.

- A bearer token (`Authorization: Bearer sprout_...`) or the UI's session cookie identifies the caller; an
  Authorization header that is wrong is a 401 even when a cookie is present (no silent fallback).
- A request authenticated by cookie that changes something must carry the session's CSRF token (header
  `X-CSRF-Token`, or a `csrf_token` form field) and, when the browser sends one, an Origin of this host (or of
  SPROUT_PUBLIC_ORIGIN, the address users open behind a proxy that rewrites Host).
  Tokens are not ambient credentials, so bearer requests need neither.
- `check_every_route_declares_access` runs when the app is built: a route that forgot is an error at start-up,
  not a hole in production.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Mount

from app.auth.roles import Permission, allows
from app.auth.service import Principal, session_principal, token_principal, touch_token
from app.core.db import transaction
from app.core.security import same_secret

SESSION_COOKIE = "sprout_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_UNSET = object()


class AuthenticationRequired(HTTPException):
    def __init__(
        self, detail: str = "authentication required: send 'Authorization: Bearer <token>' or log in"
    ) -> None:
        super().__init__(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(status.HTTP_403_FORBIDDEN, detail)


def _authenticate(request: Request) -> Principal | None:
    sessions, reads = request.app.state.sessions, request.app.state.read_sessions
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        with reads() as session:
            found = token_principal(session, secret.strip())
        if found is None:
            return None
        principal, stale = found
        if stale:
            with transaction(sessions) as session:
                touch_token(session, secret.strip())
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        with reads() as session:
            return session_principal(session, cookie)
    return None


async def current_principal(request: Request) -> Principal | None:
    """The caller, or None; looked up once per request."""
    cached = getattr(request.state, "principal", _UNSET)
    if cached is _UNSET:
        cached = await run_in_threadpool(_authenticate, request)
        request.state.principal = cached
    return cached  # type: ignore[return-value]


async def _check_csrf(request: Request, principal: Principal) -> None:
    origin = request.headers.get("origin")
    if origin is not None:
        public = request.app.state.settings.public_origin
        allowed = {request.headers.get("host"), urlsplit(public).netloc if public else None} - {None}
        if urlsplit(origin).netloc not in allowed:
            raise Forbidden("cross-origin request refused")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or principal.csrf_token is None or not same_secret(sent, principal.csrf_token):
        raise Forbidden("missing or wrong CSRF token (reload the page)")


def require(permission: Permission) -> Callable[..., Any]:
    """A dependency that admits callers whose role has `permission` and returns who they are."""

    async def dependency(request: Request) -> Principal:
        principal = await current_principal(request)
        if principal is None:
            raise AuthenticationRequired()
        if principal.via == "session" and request.method not in SAFE_METHODS:
            await _check_csrf(request, principal)
        if not allows(principal.role, permission):
            raise Forbidden(f"the {principal.role.value} role may not do this (needs '{permission.value}')")
        return principal

    dependency.permission = permission  # type: ignore[attr-defined]
    dependency.__name__ = f"require_{permission.value}"
    return dependency


def public() -> None:
    """Marks a route that anyone may call (health, login)."""


public.permission = None  # type: ignore[attr-defined]

_REQUIRE = {p: require(p) for p in Permission}

Reader = Annotated[Principal, Depends(_REQUIRE[Permission.read])]
DatasetManager = Annotated[Principal, Depends(_REQUIRE[Permission.manage_datasets])]
Generator = Annotated[Principal, Depends(_REQUIRE[Permission.generate])]
FineTuner = Annotated[Principal, Depends(_REQUIRE[Permission.finetune])]
Reviewer = Annotated[Principal, Depends(_REQUIRE[Permission.review])]
ReviewAdmin = Annotated[Principal, Depends(_REQUIRE[Permission.review_admin])]
UserManager = Annotated[Principal, Depends(_REQUIRE[Permission.manage_users])]
Public = Depends(public)


def access_of(route: APIRoute) -> list[Permission | None]:
    """The permissions a route declares (None for `public`), from its whole dependency tree."""
    found: list[Permission | None] = []
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        call = dependant.call
        if call is not None and hasattr(call, "permission"):
            found.append(call.permission)
        stack.extend(dependant.dependencies)
    return found


def flat_routes(routes: Iterable[BaseRoute]) -> list[tuple[str, BaseRoute]]:
    """(path, route) for every route an app serves, through included routers (FastAPI >= 0.16x keeps them as
    lazily resolved branches of app.routes)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        return [(getattr(r, "path", ""), r) for r in routes]
    return [(ctx.path or "", ctx.original_route) for ctx in iter_route_contexts(list(routes))]


def check_every_route_declares_access(routes: Iterable[BaseRoute], public_mounts: Iterable[str]) -> None:
    """Each API route declares exactly one permission or `public`; mounts must be listed as public."""
    allowed_mounts = set(public_mounts)
    for path, route in flat_routes(routes):
        if isinstance(route, APIRoute):
            declared = set(access_of(route))
            if len(declared) != 1:
                raise RuntimeError(
                    f"route {sorted(route.methods)} {path} must declare exactly one permission "
                    f"(or public); it declares {declared or 'none'}"
                )
        elif isinstance(route, Mount):
            if path not in allowed_mounts:
                raise RuntimeError(f"mount {path} is not a known public mount")
        else:
            raise RuntimeError(f"route {path!r} has no access rule")
