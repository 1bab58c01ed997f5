"""create_app(): the FastAPI factory. The lifespan migrates the database and starts/stops the worker."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app import __version__
from app.api.limits import BodySizeLimit
from app.api.router import api_router
from app.core.config import Settings, get_settings
from app.core.db import create_db_engine, make_session_factory, run_migrations
from app.core.errors import ConflictError, InvalidFieldError, NotFoundError
from app.jobs.worker import Worker
from app.llm.registry import BackendRegistry

log = logging.getLogger(__name__)

# Multipart framing around an upload of the largest allowed file.
_MULTIPART_SLACK = 64 * 1024


def create_app(
    settings: Settings | None = None, *, migrate: bool = True, backends: BackendRegistry | None = None
) -> FastAPI:
    """Build the app; tests may pass a BackendRegistry whose factory makes scripted backends."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            run_migrations(settings.database_url)
        engine = create_db_engine(settings.database_url)
        app.state.settings = settings
        app.state.sessions = make_session_factory(engine)
        app.state.backends = backends or BackendRegistry.from_settings(settings)
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
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + _MULTIPART_SLACK)

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(ConflictError)
    async def conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(InvalidFieldError)
    async def invalid_field(_: Request, exc: InvalidFieldError) -> JSONResponse:
        # The shape of FastAPI's own validation errors, so clients handle both alike.
        detail = [
            {"type": "value_error", "loc": ["body", *exc.field.split(".")], "msg": exc.message, "input": None}
        ]
        return JSONResponse(status_code=422, content={"detail": detail})

    app.include_router(api_router)
    return app
