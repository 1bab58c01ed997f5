"""Users, API tokens, UI sessions and the audit log: the rules, apart from HTTP.

Who is calling is a `Principal`, found from a bearer token or a session cookie. Both are random secrets stored
only as digests; a disabled user's tokens and sessions stop working at once (each request checks the user).
Failed UI logins are counted in the database, so the rate limit holds across service instances.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.models import ApiToken, AuditEvent, LoginFailure, User, WebSession
from app.auth.roles import Role
from app.core.db import utcnow
from app.core.errors import ConflictError, InvalidFieldError, NotFoundError
from app.core.security import (
    hash_password,
    needs_rehash,
    new_secret,
    new_token,
    token_digest,
    verify_password,
)

USER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,63}$")
MIN_PASSWORD_CHARS = 10
# A token's last use is written at most this often: a write per request would serialise readers on SQLite.
LAST_USED_RESOLUTION = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and how: a token (no CSRF needed) or a browser session (CSRF token required to change)."""

    user_id: int
    name: str
    role: Role
    via: Literal["token", "session"]
    csrf_token: str | None = None


class LoginError(Exception):
    """Wrong name or password, or a disabled account (one message for all, so names cannot be probed)."""


class LoginRateLimitedError(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


# --- users ---------------------------------------------------------------------------------------------------


def normalize_name(name: str) -> str:
    return name.strip().lower()


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidFieldError("password", f"must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > 1024:
        raise InvalidFieldError("password", "must have at most 1024 characters")


def create_user(session: Session, name: str, role: Role, password: str | None = None) -> User:
    name = normalize_name(name)
    if not USER_NAME_RE.match(name):
        raise InvalidFieldError(
            "name",
            "use 1-64 lower-case letters, digits, '_', '.', '@' or '-', starting with a letter or digit",
        )
    if password is not None:
        check_password_rules(password)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise ConflictError(f"user {name!r} already exists")
    user = User(name=name, role=role, password_hash=hash_password(password) if password else None)
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create won the race
        raise ConflictError(f"user {name!r} already exists") from exc
    return user


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"user {user_id} not found")
    return user


def get_user_by_name(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == normalize_name(name)))
    if user is None:
        raise NotFoundError(f"user {name!r} not found")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def any_user_exists(session: Session) -> bool:
    return session.scalar(select(User.id).limit(1)) is not None


def set_password(session: Session, user: User, password: str) -> None:
    """A new password; every browser session of the user ends (tokens are revoked separately)."""
    check_password_rules(password)
    user.password_hash = hash_password(password)
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))


def set_disabled(session: Session, user: User, disabled: bool) -> None:
    """A disabled user can do nothing: their sessions end now and their tokens are refused while disabled."""
    user.disabled = disabled
    if disabled:
        session.execute(delete(WebSession).where(WebSession.user_id == user.id))


def set_role(session: Session, user: User, role: Role) -> None:
    user.role = role


# --- API tokens ----------------------------------------------------------------------------------------------


def create_token(
    session: Session, user: User, *, name: str = "", expires_in: timedelta | None = None
) -> tuple[str, ApiToken]:
    """A new token for `user`: the secret (to show once) and its stored row."""
    secret = new_token()
    row = ApiToken(
        user_id=user.id,
        name=name[:100],
        digest=token_digest(secret),
        prefix=secret[:12],
        expires_at=utcnow() + expires_in if expires_in is not None else None,
    )
    session.add(row)
    session.flush()
    return secret, row


def list_tokens(session: Session, user_id: int | None = None) -> list[tuple[ApiToken, str]]:
    """Tokens with their owners' names, newest first (of one user, or of everyone)."""
    query = select(ApiToken, User.name).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id.desc())
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return [(token, owner) for token, owner in session.execute(query)]


def revoke_token(session: Session, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFoundError(f"token {token_id} not found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return token


def token_principal(session: Session, secret: str) -> tuple[Principal, bool] | None:
    """The principal of a bearer token, and whether its last-use time is due for a write; None if not valid."""
    now = utcnow()
    row = session.execute(
        select(ApiToken.id, ApiToken.expires_at, ApiToken.revoked_at, ApiToken.last_used_at, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.digest == token_digest(secret))
    ).first()
    if row is None:
        return None
    _, expires_at, revoked_at, last_used_at, user = row
    if revoked_at is not None or user.disabled or (expires_at is not None and expires_at <= now):
        return None
    stale = last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION
    return Principal(user.id, user.name, user.role, "token"), stale


def touch_token(session: Session, secret: str) -> None:
    session.execute(
        update(ApiToken).where(ApiToken.digest == token_digest(secret)).values(last_used_at=utcnow())
    )


# --- UI sessions and logins ----------------------------------------------------------------------------------


def begin_login(
    session: Session, name: str, client: str, *, window: timedelta, per_name: int, per_client: int
) -> int:
    """Count a login attempt before its password is checked, so parallel guesses cannot slip past the limit
    while a slow hash runs: refuse it once the name or the client address has failed too often within
    `window`, else record it as a failure (the id, which `open_session` takes back when the password holds)."""
    since = utcnow() - window
    for column, value, limit in (
        (LoginFailure.name, name, per_name),
        (LoginFailure.client, client, per_client),
    ):
        failures = session.execute(
            select(func.count(), func.min(LoginFailure.created_at)).where(
                column == value, LoginFailure.created_at > since
            )
        ).one()
        if failures[0] >= limit:
            oldest: datetime = failures[1]
            retry_after = max(1, int((oldest + window - utcnow()).total_seconds()) + 1)
            raise LoginRateLimitedError(retry_after)
    attempt = LoginFailure(name=name[:64], client=client[:64])
    session.add(attempt)
    session.flush()
    return attempt.id


def check_password(session: Session, name: str, password: str) -> tuple[int, str | None]:
    """The user's id, if the password is theirs and the account is enabled, and the password hashed anew when
    its hash has older parameters. Run outside any write transaction: hashing takes tens of milliseconds, on
    purpose, and SQLite's write lock would be held all along."""
    user = session.scalar(select(User).where(User.name == normalize_name(name)))
    ok = verify_password(user.password_hash if user is not None else None, password)
    if user is None or not ok or user.disabled:
        raise LoginError("wrong name or password")
    stale = user.password_hash is not None and needs_rehash(user.password_hash)
    return user.id, hash_password(password) if stale else None


def open_session(
    session: Session,
    user_id: int,
    new_hash: str | None,
    attempt_id: int,
    *,
    lifetime: timedelta,
    forget_after: timedelta,
) -> tuple[str, WebSession]:
    """A checked login opens a browser session: the cookie value (to set once) and its row. The attempt stops
    counting as a failure, a rehashed password is stored, and expired rows are pruned."""
    session.execute(delete(LoginFailure).where(LoginFailure.id == attempt_id))
    if new_hash is not None:
        session.execute(update(User).where(User.id == user_id).values(password_hash=new_hash))
    cookie = new_secret()
    row = WebSession(
        user_id=user_id, digest=token_digest(cookie), csrf_token=new_secret(), expires_at=utcnow() + lifetime
    )
    session.add(row)
    prune_expired(session, failures_older_than=forget_after)
    session.flush()
    return cookie, row


def session_principal(session: Session, cookie: str) -> Principal | None:
    row = session.execute(
        select(WebSession.expires_at, WebSession.csrf_token, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.digest == token_digest(cookie))
    ).first()
    if row is None:
        return None
    expires_at, csrf_token, user = row
    if user.disabled or expires_at <= utcnow():
        return None
    return Principal(user.id, user.name, user.role, "session", csrf_token)


def logout(session: Session, cookie: str) -> None:
    session.execute(delete(WebSession).where(WebSession.digest == token_digest(cookie)))


def prune_expired(session: Session, *, failures_older_than: timedelta) -> None:
    """Forget expired sessions and old login failures (at each login: never on a hot path)."""
    now = utcnow()
    session.execute(delete(WebSession).where(WebSession.expires_at <= now))
    session.execute(delete(LoginFailure).where(LoginFailure.created_at <= now - failures_older_than))


# --- audit log -----------------------------------------------------------------------------------------------


def audit(session: Session, actor: Principal | None, action: str, target: str = "", **detail: Any) -> None:
    """Record an administrative action; `actor` None is the local command line (`sprout users ...`)."""
    session.add(
        AuditEvent(
            actor_id=actor.user_id if actor else None,
            actor=actor.name if actor else "local",
            action=action,
            target=target[:200],
            detail=detail,
        )
    )


def list_audit(session: Session, *, limit: int, before: int | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    return list(session.scalars(query))
