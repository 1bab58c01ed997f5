"""Schedules: create, change, pause, resume, delete, and fire the due ones (stub: the firing is built next)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.llm.registry import BackendRegistry


def fire_due(
    sessions: sessionmaker[Session], settings: Settings, registry: BackendRegistry, worker_id: str
) -> list[int]:
    """Queue the generation job of every due firing; the ids of the jobs queued."""
    return []
