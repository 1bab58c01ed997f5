"""create_app(): the FastAPI factory. The lifespan migrates the database and starts/stops the worker."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app import __version__
from app.api import datasets, generations, health, items
from app.config import Settings, get_settings
from app.datasets import ConflictError, NotFoundError
from app.db import create_db_engine, make_session_factory, run_migrations
from app.generation.backends import BackendPool
from app.jobs.worker import Worker

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, migrate: bool = True, backends: BackendPool | None = None
) -> FastAPI:
    """Build the app; tests may pass a BackendPool whose factory makes scripted backends."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            run_migrations(settings.database_url)
        engine = create_db_engine(settings.database_url)
        app.state.settings = settings
        app.state.sessions = make_session_factory(engine)
        app.state.backends = backends or BackendPool()
        app.state.worker = None
        if settings.worker_enabled:
            app.state.worker = Worker(app.state.sessions, settings, app.state.backends)
            app.state.worker.start()
        try:
            yield
        finally:
            if app.state.worker is not None:
                await app.state.worker.stop()
            await app.state.backends.aclose()
            engine.dispose()

    app = FastAPI(
        title="Sprout",
        version=__version__,
        summary="Grow instruction-tuning datasets from a few seed tasks.",
        lifespan=lifespan,
    )
    app.state.notify_worker = lambda: app.state.worker.notify() if app.state.worker is not None else None

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(ConflictError)
    async def conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    for router in (health.router, datasets.router, generations.router, items.router):
        app.include_router(router)
    return app
