"""Request and response bodies of the auth room. Secrets (passwords, tokens) appear in a response only once, in
the response to the request that made them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.auth.models import ApiToken, AuditEvent, User
from app.auth.roles import Permission, Role


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    role: Role
    password: str | None = Field(
        default=None, max_length=1024, description="At least 10 characters; omit to have one generated."
    )


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: bool | None = None


class PasswordReset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str | None = Field(default=None, max_length=1024, description="Omit to have one generated.")


class UserOut(BaseModel):
    id: int
    name: str
    role: Role
    disabled: bool
    can_log_in: bool = Field(description="Whether the user has a password for the UI.")
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            name=user.name,
            role=user.role,
            disabled=user.disabled,
            can_log_in=user.password_hash is not None,
            created_at=user.created_at,
        )


class UserWithPassword(UserOut):
    password: str | None = Field(description="The generated password: shown this once, never again.")


class Me(BaseModel):
    id: int
    name: str
    role: Role
    permissions: list[Permission]
    via: str


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=64, description="The owner's user name.")
    name: str = Field(default="", max_length=100, description="What the token is for.")
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class TokenOut(BaseModel):
    id: int
    user: str
    name: str
    prefix: str = Field(description="The token's first characters, to recognise it.")
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken, owner: str) -> TokenOut:
        return cls(
            id=token.id,
            user=owner,
            name=token.name,
            prefix=token.prefix,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            last_used_at=token.last_used_at,
        )


class TokenCreated(TokenOut):
    token: str = Field(description="The token: shown this once, stored only as a digest.")


class AuditEventOut(BaseModel):
    id: int
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls.model_validate(event, from_attributes=True)
