"""What every command shares: consoles, errors, the database. Untrusted text (model output, user input, file
names) is always printed as plain text, never parsed as rich markup."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import create_db_engine, make_session_factory, run_migrations

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def sessions_for(settings: Settings) -> sessionmaker[Session]:
    run_migrations(settings.database_url)
    return make_session_factory(create_db_engine(settings.database_url))


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(Text.assemble(("error: ", "bold red"), message))
    return typer.Exit(code)


def plain(*parts: str | tuple[str, str]) -> Text:
    """A line of plain text with optional (text, style) parts: styles from us, text from anyone."""
    return Text.assemble(*parts)
