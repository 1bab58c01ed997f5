"""Tuned models served by a LoRA-enabled backend (vLLM with --enable-lora and runtime loading).

A succeeded job's adapter is loaded with `POST /v1/load_lora_adapter` on every replica of the backend; the
database remembers which adapters each backend should hold, so after a server restarts (it forgets them)
Sprout loads them again, on each replica that lacks one, before a generation job uses it. A replica that is
down meanwhile is skipped (the backend routes around it, and sends a request it answers with 404 to the
others). The adapter directory is read by the servers themselves: each must see `settings.finetune_dir` at
the same path (the same machine, or a shared volume).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from openai import APIConnectionError, APIError, APIStatusError, AsyncOpenAI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import BackendSettings
from app.core.db import transaction, utcnow
from app.core.errors import InvalidFieldError
from app.finetune.models import LoraAdapter


class AdapterLoadError(RuntimeError):
    """The backend refused to load an adapter (LoRA disabled, runtime loading off, a rank above its limit), or
    some of its replicas could not be reached; `loaded` counts the replicas that did load it."""

    loaded: int = 0


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


def _client(settings: BackendSettings, url: str) -> AsyncOpenAI:
    key = settings.api_key.get_secret_value() if settings.api_key else "unused"
    return AsyncOpenAI(base_url=url, api_key=key, max_retries=2, timeout=120)


async def served_models(settings: BackendSettings, url: str | None = None) -> set[str]:
    """The models one server serves (`url`, one of the backend's replicas; default: its first)."""
    async with _client(settings, url or settings.replica_urls[0]) as client:
        return {m.id async for m in client.models.list()}


async def load_adapter(settings: BackendSettings, name: str, path: Path | str) -> None:
    """Ask every replica of the backend to load an adapter (a 400 saying it is already loaded counts as done).
    AdapterLoadError names the replicas that did not; its `loaded` says how many did."""
    urls = settings.replica_urls
    results = await asyncio.gather(
        *(_load_on(settings, url, name, path) for url in urls), return_exceptions=True
    )
    failed = [(url, exc) for url, exc in zip(urls, results, strict=True) if isinstance(exc, BaseException)]
    for _, exc in failed:
        if not isinstance(exc, AdapterLoadError | APIError):
            raise exc  # not the server's answer: a bug, or a cancellation
    if failed:
        error = AdapterLoadError("; ".join(_describe(url, name, exc) for url, exc in failed))
        error.loaded = len(urls) - len(failed)
        raise error


async def _load_on(settings: BackendSettings, url: str, name: str, path: Path | str) -> None:
    async with _client(settings, url) as client:
        try:
            await client.post(
                "/load_lora_adapter",
                body={"lora_name": name, "lora_path": str(path)},
                cast_to=httpx.Response,
            )
        except APIStatusError as exc:
            if exc.status_code == 400 and "already" in exc.message.lower():
                return
            raise AdapterLoadError(f"{url}: could not load {name}: {exc.message}") from exc


def _describe(url: str, name: str, exc: BaseException) -> str:
    if isinstance(exc, AdapterLoadError):
        return str(exc)
    return f"{url}: could not load {name}: {type(exc).__name__}: {exc}"


async def register_adapter(
    sessions: sessionmaker[Session],
    backends: dict[str, BackendSettings],
    backend: str,
    job_id: int,
    name: str,
    path: Path,
) -> None:
    """Load a job's adapter on every replica of `backend` and remember it there. When some replicas could not
    load it (one was down), it is remembered all the same (`ensure_loaded` loads it there before a job uses
    it) and the AdapterLoadError is raised afterwards; when none could, nothing is remembered."""
    partial: AdapterLoadError | None = None
    try:
        await load_adapter(backends[backend], name, path)
    except AdapterLoadError as exc:
        if exc.loaded == 0:
            raise
        partial = exc

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
    if partial is not None:
        raise partial


async def ensure_loaded(
    sessions: sessionmaker[Session], backends: dict[str, BackendSettings], backend: str, name: str
) -> bool:
    """Before a job uses a tuned model: load it again on each replica that does not hold it (it restarted).
    Returns whether it had to be loaded anywhere. Replicas that cannot be reached are skipped, unless none
    can (then that connection error is raised); a replica that refuses to load it raises AdapterLoadError."""

    def lookup() -> Any:
        with sessions() as session:
            return check_adapter(session, backend, name).path

    path = await asyncio.to_thread(lookup)
    settings = backends[backend]

    async def on(url: str) -> bool:
        if name in await served_models(settings, url):
            return False
        await _load_on(settings, url, name, path)
        return True

    urls = settings.replica_urls
    results = await asyncio.gather(*(on(url) for url in urls), return_exceptions=True)
    unreachable = [r for r in results if isinstance(r, APIConnectionError)]
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, APIConnectionError):
            raise result
    if len(unreachable) == len(urls):
        raise unreachable[0]
    return any(r is True for r in results)
