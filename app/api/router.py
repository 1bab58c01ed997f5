"""The HTTP API: every room's router, mounted in one place."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import health
from app.datasets.router import router as datasets_router
from app.generation.router import router as generation_router

api_router = APIRouter()
for room in (health.router, datasets_router, generation_router):
    api_router.include_router(room)
