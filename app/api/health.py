"""Liveness and readiness, and the configured backends (names and kinds only: never URLs or keys)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel
from sqlalchemy import text

from app import __version__
from app.auth.deps import Generator, Public

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    worker: str
    default_backend: str
    version: str


class BackendOut(BaseModel):
    name: str
    kind: str
    model: str
    mode: str
    max_in_flight: int
    replicas: int  # servers behind the name (an openai backend's base_urls); 1 for the embedded model
    default: bool


@router.get("/healthz", response_model=Health, dependencies=[Public])
def healthz(request: Request, response: Response) -> Health:
    state = request.app.state
    try:
        with state.sessions() as session:
            session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # noqa: BLE001 (report, don't crash, when the database is down)
        database = f"error: {type(exc).__name__}"
    healthy = database == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status="ok" if healthy else "degraded",
        database=database,
        worker="running" if state.worker is not None else "disabled",
        default_backend=state.settings.default_backend,
        version=__version__,
    )


@router.get("/v1/backends", response_model=list[BackendOut], tags=["backends"])
def backends(_: Generator, request: Request) -> list[BackendOut]:
    """The backends a job may name."""
    settings = request.app.state.settings
    return [
        BackendOut(
            name=name,
            kind=b.kind,
            model=b.model,
            mode=b.mode,
            max_in_flight=b.in_flight,
            replicas=len(b.replica_urls) or 1,
            default=name == settings.default_backend,
        )
        for name, b in sorted(settings.backends.items())
    ]
