"""Request-scoped dependencies. Sessions end (and commit) before the response is sent: a client that has its
201 can read what it created, from any instance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import transaction
from app.llm.registry import BackendRegistry


def _write_session(request: Request) -> Iterator[Session]:
    with transaction(request.app.state.sessions) as session:
        yield session


def _read_session(request: Request) -> Iterator[Session]:
    with request.app.state.read_sessions() as session:
        yield session


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _registry(request: Request) -> BackendRegistry:
    return request.app.state.backends


def _session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.sessions


WriteSession = Annotated[Session, Depends(_write_session, scope="function")]
ReadSession = Annotated[Session, Depends(_read_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[BackendRegistry, Depends(_registry)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(_session_factory)]
