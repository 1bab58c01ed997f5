"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import text

from app import __version__
from app.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(request: Request, response: Response) -> Health:
    state = request.app.state
    try:
        with state.sessions() as session:
            session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # noqa: BLE001 (report, don't crash, when the database is down)
        database = f"error: {type(exc).__name__}"
    worker = "running" if state.worker is not None else "disabled"
    healthy = database == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status="ok" if healthy else "degraded",
        database=database,
        worker=worker,
        backend=state.settings.llm.backend,
        version=__version__,
    )
