"""`sprout users ...` and `sprout tokens ...`: accounts and API tokens, from a shell on the server.

These commands act on the database directly (whoever can run them can read the database anyway) and are
recorded in the audit log as done by "local". Passwords are read from a prompt (never a command-line
argument, which other users of the machine can see), or generated and printed once; tokens are printed once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from app.auth.roles import Role
from app.auth.service import (
    audit,
    create_token,
    create_user,
    get_user_by_name,
    list_tokens,
    list_users,
    revoke_token,
    set_disabled,
    set_password,
    set_role,
)
from app.cli.common import console, fail, plain, sessions_for
from app.core.config import get_settings
from app.core.db import transaction
from app.core.errors import ConflictError, InvalidFieldError, NotFoundError
from app.core.security import generate_password

users = typer.Typer(
    help="User accounts: create, list, reset a password, change a role, disable.", no_args_is_help=True
)
tokens = typer.Typer(help="API tokens: create (shown once), list, revoke.", no_args_is_help=True)

Errors = (ConflictError, InvalidFieldError, NotFoundError)


def _password(generate: bool) -> tuple[str, bool]:
    if generate:
        return generate_password(), True
    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password, False


@users.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="Lower-case letters, digits, '_', '.', '@', '-'.")],
    role: Annotated[Role, typer.Option(help="admin, service or reviewer.")] = Role.reviewer,
    generate: Annotated[
        bool, typer.Option("--generate-password", help="Generate a password and print it once.")
    ] = False,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="An account for API tokens only (no UI login).")
    ] = False,
) -> None:
    """Create a user; the password is prompted for (or generated and printed once)."""
    password, shown = (None, False) if no_password else _password(generate)
    sessions = sessions_for(get_settings())
    try:
        with transaction(sessions) as session:
            user = create_user(session, name, role, password)
            audit(session, None, "user.create", user.name, role=role.value)
    except Errors as exc:
        raise fail(str(exc)) from exc
    console.print(plain("created ", (user.name, "bold"), f" ({role.value})"))
    if shown and password:
        console.print(plain("password (shown once): ", (password, "bold")))


@users.command("list")
def users_list() -> None:
    """Every user, with role and state."""
    with sessions_for(get_settings())() as session:
        rows = list_users(session)
    table = Table(title="users")
    for column in ("id", "name", "role", "state", "UI login", "created"):
        table.add_column(column)
    for user in rows:
        table.add_row(
            str(user.id),
            Text(user.name),
            user.role.value,
            "disabled" if user.disabled else "active",
            "yes" if user.password_hash else "no",
            user.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@users.command("set-password")
def users_set_password(
    name: str,
    generate: Annotated[
        bool, typer.Option("--generate-password", help="Generate one and print it once.")
    ] = False,
) -> None:
    """Reset a user's password (their UI sessions end)."""
    password, shown = _password(generate)
    _change(name, "user.password_reset", lambda session, user: set_password(session, user, password))
    if shown:
        console.print(plain("password (shown once): ", (password, "bold")))


@users.command("set-role")
def users_set_role(
    name: str, role: Annotated[Role, typer.Argument(help="admin, service or reviewer.")]
) -> None:
    """Change a user's role."""
    _change(name, "user.role", lambda session, user: set_role(session, user, role), after=role.value)


@users.command("disable")
def users_disable(name: str) -> None:
    """Disable a user: their sessions end and their tokens stop working (until enabled again)."""
    _change(name, "user.disable", lambda session, user: set_disabled(session, user, True))


@users.command("enable")
def users_enable(name: str) -> None:
    """Enable a disabled user again."""
    _change(name, "user.enable", lambda session, user: set_disabled(session, user, False))


def _change(name: str, action: str, change, **detail: str) -> None:  # noqa: ANN001 (a callable on a user)
    sessions = sessions_for(get_settings())
    try:
        with transaction(sessions) as session:
            user = get_user_by_name(session, name)
            change(session, user)
            audit(session, None, action, user.name, **detail)
    except Errors as exc:
        raise fail(str(exc)) from exc
    console.print(plain(f"{action.split('.')[-1].replace('_', ' ')}: ", (user.name, "bold")))


@tokens.command("create")
def tokens_create(
    user: Annotated[str, typer.Option("--user", "-u", help="The owner's user name.")],
    name: Annotated[str, typer.Option(help="What the token is for.")] = "",
    expires_in_days: Annotated[Optional[float], typer.Option(min=0.001, help="Default: never.")] = None,  # noqa: UP045
) -> None:
    """Create an API token for a user and print it once (only its digest is stored)."""
    sessions = sessions_for(get_settings())
    try:
        with transaction(sessions) as session:
            owner = get_user_by_name(session, user)
            expires = timedelta(days=expires_in_days) if expires_in_days else None
            secret, row = create_token(session, owner, name=name, expires_in=expires)
            audit(session, None, "token.create", owner.name, token_id=row.id, name=name)
    except Errors as exc:
        raise fail(str(exc)) from exc
    console.print(
        plain(
            f"token {row.id} for ",
            (owner.name, "bold"),
            " (shown once; send it as 'Authorization: Bearer ...'):",
        )
    )
    print(secret)


@tokens.command("list")
def tokens_list(user: Annotated[Optional[str], typer.Option("--user", "-u")] = None) -> None:  # noqa: UP045
    """Tokens (their first characters, never the secret), newest first."""
    with sessions_for(get_settings())() as session:
        try:
            user_id = get_user_by_name(session, user).id if user else None
        except NotFoundError as exc:
            raise fail(str(exc)) from exc
        rows = list_tokens(session, user_id)
    table = Table(title="API tokens")
    for column in ("id", "user", "name", "starts with", "created", "expires", "last used", "state"):
        table.add_column(column)
    for token, owner in rows:
        table.add_row(
            str(token.id),
            Text(owner),
            Text(token.name),
            token.prefix + "…",
            token.created_at.strftime("%Y-%m-%d %H:%M"),
            token.expires_at.strftime("%Y-%m-%d %H:%M") if token.expires_at else "never",
            token.last_used_at.strftime("%Y-%m-%d %H:%M") if token.last_used_at else "",
            "revoked" if token.revoked_at else "active",
        )
    console.print(table)


@tokens.command("revoke")
def tokens_revoke(token_id: int) -> None:
    """Revoke a token: it stops working at once."""
    sessions = sessions_for(get_settings())
    try:
        with transaction(sessions) as session:
            revoke_token(session, token_id)
            audit(session, None, "token.revoke", str(token_id))
    except Errors as exc:
        raise fail(str(exc)) from exc
    console.print(f"revoked token {token_id}")
