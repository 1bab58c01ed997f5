"""create_app(): the FastAPI factory. The lifespan migrates the database and starts/stops the worker."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError

from app import __version__
from app.api.limits import BodySizeLimit
from app.api.out_of_range import numeric_out_of_range, out_of_range
from app.api.router import api_router
from app.api.security_headers import SecurityHeaders
from app.auth.deps import Reader, check_every_route_declares_access
from app.core.config import Settings, get_settings
from app.core.db import create_db_engine, make_read_session_factory, make_session_factory, run_migrations
from app.core.errors import ConflictError, ForbiddenError, InvalidFieldError, NotFoundError
from app.finetune.errors import FieldError, error_body, is_openai_path, validation_error_body
from app.jobs.worker import Worker
from app.llm.registry import BackendRegistry
from app.ops.fleet import fleet_registry
from app.web.router import STATIC_DIR, LoginRequired, PageForbidden, error_page, login_page

log = logging.getLogger(__name__)

# Multipart framing around an upload of the largest allowed file.
_MULTIPART_SLACK = 64 * 1024
PUBLIC_MOUNTS = ("/static",)  # the login page's stylesheet: nothing secret is served there


def create_app(
    settings: Settings | None = None, *, migrate: bool = True, backends: BackendRegistry | None = None
) -> FastAPI:
    """Build the app; tests may pass a BackendRegistry whose factory makes scripted backends."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Requests run in a thread pool and mostly wait on the database: a thread whose answer arrived should get
        # the interpreter back within a millisecond, not after a busy neighbour's default 5 ms slice (under load
        # this halved the review queue's median latency).
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        if migrate:
            run_migrations(settings.database_url)
        engine = create_db_engine(settings.database_url)
        app.state.settings = settings
        app.state.sessions = make_session_factory(engine)
        app.state.read_sessions = make_read_session_factory(engine)
        # GET /metrics: this app's own registry for the fleet collector (never the process-wide one).
        app.state.fleet_metrics = fleet_registry(app.state.read_sessions, settings)
        app.state.backends = backends or BackendRegistry.from_settings(settings)
        app.state.worker = None
        if settings.worker_enabled:
            app.state.worker = Worker(
                app.state.sessions, settings, app.state.backends, database_url=settings.database_url
            )
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
        docs_url=None,  # served below, behind authentication like every other route
        redoc_url=None,
        openapi_url=None,
    )
    app.state.notify_worker = lambda: app.state.worker.notify() if app.state.worker is not None else None
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + _MULTIPART_SLACK)
    app.add_middleware(SecurityHeaders)

    def is_page(request: Request) -> bool:
        return request.url.path.startswith("/ui")

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> Response:
        if is_page(request):
            return error_page(request, 404, "Not found", str(exc))
        if is_openai_path(request.url.path):
            return JSONResponse(status_code=404, content=error_body(str(exc), code="not_found"))
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(ConflictError)
    async def conflict(request: Request, exc: ConflictError) -> JSONResponse:
        if is_openai_path(request.url.path):
            return JSONResponse(status_code=409, content=error_body(str(exc), code="conflict"))
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(FieldError)
    async def field_error(_: Request, exc: FieldError) -> JSONResponse:
        return JSONResponse(status_code=400, content=error_body(exc.message, param=exc.param, code=exc.code))

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> Response:
        if is_openai_path(request.url.path):  # OpenAI answers a bad parameter with a 400 naming it
            return JSONResponse(status_code=400, content=validation_error_body(list(exc.errors())))
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(ForbiddenError)
    async def forbidden(_: Request, exc: ForbiddenError) -> JSONResponse:
        return JSONResponse(status_code=403, content={"detail": str(exc)})

    @app.exception_handler(OverflowError)
    async def overflow(request: Request, _: OverflowError) -> Response:
        return await invalid_field(request, out_of_range(request.path_params, request.query_params))

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> Response:
        if not numeric_out_of_range(exc):
            raise exc
        return await invalid_field(request, out_of_range(request.path_params, request.query_params))

    @app.exception_handler(InvalidFieldError)
    async def invalid_field(request: Request, exc: InvalidFieldError) -> Response:
        if is_page(request):
            return error_page(request, 422, "Invalid request", str(exc))
        # The shape of FastAPI's own validation errors, so clients handle both alike.
        detail = [
            {
                "type": "value_error",
                "loc": [exc.location, *filter(None, exc.field.split("."))],
                "msg": exc.message,
                "input": None,
            }
        ]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> HTMLResponse:
        return login_page(request, next_url=exc.next_url, status_code=401)

    @app.exception_handler(PageForbidden)
    async def page_forbidden(request: Request, exc: PageForbidden) -> HTMLResponse:
        return error_page(request, 403, "Not allowed", exc.message)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: Reader) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(_: Reader) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Sprout API")

    app.include_router(api_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    check_every_route_declares_access(app.routes, PUBLIC_MOUNTS)
    return app
