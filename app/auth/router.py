"""Users, tokens and the audit log over HTTP (admins), and who am I (everyone). UI login lives in app/web."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.api.deps import ReadSession, WriteSession
from app.auth.deps import Reader, UserManager
from app.auth.roles import ROLE_PERMISSIONS
from app.auth.schemas import (
    AuditEventOut,
    Me,
    PasswordReset,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
    UserWithPassword,
)
from app.auth.service import (
    audit,
    create_token,
    create_user,
    get_user,
    get_user_by_name,
    list_audit,
    list_tokens,
    list_users,
    revoke_token,
    set_disabled,
    set_password,
    set_role,
)
from app.core.security import generate_password

router = APIRouter(prefix="/v1", tags=["users"])


@router.get("/me", response_model=Me)
def me(principal: Reader) -> Me:
    return Me(
        id=principal.user_id,
        name=principal.name,
        role=principal.role,
        permissions=sorted(ROLE_PERMISSIONS[principal.role]),
        via=principal.via,
    )


@router.get("/users", response_model=list[UserOut])
def users(_: UserManager, session: ReadSession) -> list[UserOut]:
    return [UserOut.of(u) for u in list_users(session)]


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserWithPassword)
def add_user(principal: UserManager, body: UserCreate, session: WriteSession) -> UserWithPassword:
    """Create a user; without a password one is generated and returned this once."""
    generated = generate_password() if body.password is None else None
    # An empty password breaks the rules (422); it does not ask for an account without one.
    user = create_user(session, body.name, body.role, generated or body.password)
    audit(session, principal, "user.create", user.name, role=user.role.value)
    return UserWithPassword(**UserOut.of(user).model_dump(), password=generated)


@router.get("/users/{user_id}", response_model=UserOut)
def user(_: UserManager, user_id: int, session: ReadSession) -> UserOut:
    return UserOut.of(get_user(session, user_id))


@router.patch("/users/{user_id}", response_model=UserOut)
def update_user(principal: UserManager, user_id: int, body: UserUpdate, session: WriteSession) -> UserOut:
    """Change a user's role, or disable (enable) them: a disabled user's sessions end and tokens stop working."""
    target = get_user(session, user_id)
    if body.role is not None and body.role != target.role:
        audit(session, principal, "user.role", target.name, before=target.role.value, after=body.role.value)
        set_role(session, target, body.role)
    if body.disabled is not None and body.disabled != target.disabled:
        set_disabled(session, target, body.disabled)
        audit(session, principal, "user.disable" if body.disabled else "user.enable", target.name)
    return UserOut.of(target)


@router.post("/users/{user_id}/password", response_model=UserWithPassword)
def reset_password(
    principal: UserManager, user_id: int, body: PasswordReset, session: WriteSession
) -> UserWithPassword:
    """Set a new password (generated and returned this once when none is given); the user's sessions end."""
    target = get_user(session, user_id)
    generated = generate_password() if body.password is None else None
    set_password(session, target, body.password or generated or "")
    audit(session, principal, "user.password_reset", target.name)
    return UserWithPassword(**UserOut.of(target).model_dump(), password=generated)


@router.get("/tokens", response_model=list[TokenOut])
def tokens(_: UserManager, session: ReadSession, user_id: int | None = None) -> list[TokenOut]:
    return [TokenOut.of(t, owner) for t, owner in list_tokens(session, user_id)]


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated)
def add_token(principal: UserManager, body: TokenCreate, session: WriteSession) -> TokenCreated:
    """A new API token for a user, returned this once (only its digest is kept)."""
    owner = get_user_by_name(session, body.user)
    expires = timedelta(days=body.expires_in_days) if body.expires_in_days is not None else None
    secret, token = create_token(session, owner, name=body.name, expires_in=expires)
    audit(session, principal, "token.create", owner.name, token_id=token.id, name=token.name)
    return TokenCreated(**TokenOut.of(token, owner.name).model_dump(), token=secret)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(principal: UserManager, token_id: int, session: WriteSession) -> Response:
    """Revoke a token (it stays listed, marked revoked)."""
    token = revoke_token(session, token_id)
    audit(session, principal, "token.revoke", str(token_id), user_id=token.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/audit", response_model=list[AuditEventOut])
def audit_log(
    _: UserManager,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, description="Continue with events older than this id.")] = None,
) -> list[AuditEventOut]:
    return [AuditEventOut.of(e) for e in list_audit(session, limit=limit, before=before)]
