"""Tuned models served by a LoRA-enabled backend (vLLM with --enable-lora and runtime loading).

A succeeded job's adapter is loaded with `POST /v1/load_lora_adapter`; the database remembers which adapters
each backend should hold, so after the server restarts (it forgets them) Sprout loads them again before a
generation job uses one. The adapter directory is read by the server itself: it must see
`settings.finetune_dir` at the same path (the same machine, or a shared volume).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from openai import APIStatusError, AsyncOpenAI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import BackendSettings
from app.core.db import transaction, utcnow
from app.core.errors import InvalidFieldError
from app.finetune.models import LoraAdapter


class AdapterLoadError(RuntimeError):
    """The backend refused to load an adapter (LoRA disabled, runtime loading off, a rank above its limit)."""


def check_adapter(session: Session, backend: str, name: str) -> LoraAdapter:
    """The adapter a generation job names, registered on its backend (InvalidFieldError, a 422, otherwise)."""
    found = session.scalar(
        select(LoraAdapter).where(LoraAdapter.backend == backend, LoraAdapter.name == name)
    )
    if found is None:
        known = session.scalars(select(LoraAdapter.name).where(LoraAdapter.backend == backend)).all()
        raise InvalidFieldError(
            "model",
            f"{name!r} is neither backend {backend!r}'s model nor a fine-tuned model registered on it "
            f"(registered: {', '.join(known) or 'none'})",
        )
    return found


def _client(settings: BackendSettings) -> AsyncOpenAI:
    key = settings.api_key.get_secret_value() if settings.api_key else "unused"
    return AsyncOpenAI(base_url=settings.base_url, api_key=key, max_retries=2, timeout=120)


async def served_models(settings: BackendSettings) -> set[str]:
    async with _client(settings) as client:
        return {m.id async for m in client.models.list()}


async def load_adapter(settings: BackendSettings, name: str, path: Path | str) -> None:
    """Ask the server to load an adapter (a 400 saying it is already loaded counts as done)."""
    async with _client(settings) as client:
        try:
            await client.post(
                "/load_lora_adapter",
                body={"lora_name": name, "lora_path": str(path)},
                cast_to=httpx.Response,
            )
        except APIStatusError as exc:
            if exc.status_code == 400 and "already" in exc.message.lower():
                return
            raise AdapterLoadError(f"{settings.base_url}: could not load {name}: {exc.message}") from exc


async def register_adapter(
    sessions: sessionmaker[Session],
    backends: dict[str, BackendSettings],
    backend: str,
    job_id: int,
    name: str,
    path: Path,
) -> None:
    """Load a job's adapter on `backend` and remember it there."""
    await load_adapter(backends[backend], name, path)

    def remember() -> None:
        with transaction(sessions) as session:
            row = session.scalar(
                select(LoraAdapter).where(LoraAdapter.backend == backend, LoraAdapter.name == name)
            )
            if row is None:
                row = LoraAdapter(backend=backend, name=name, job_id=job_id, path=str(path))
                session.add(row)
            row.loaded_at = utcnow()

    await asyncio.to_thread(remember)


async def ensure_loaded(
    sessions: sessionmaker[Session], backends: dict[str, BackendSettings], backend: str, name: str
) -> bool:
    """Before a job uses a tuned model: load it again if the server does not hold it (it restarted).
    Returns whether it had to be loaded."""

    def lookup() -> Any:
        with sessions() as session:
            return check_adapter(session, backend, name).path

    path = await asyncio.to_thread(lookup)
    settings = backends[backend]
    if name in await served_models(settings):
        return False
    await load_adapter(settings, name, path)
    return True
