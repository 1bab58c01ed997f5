"""Every room's router (the JSON API and the reviewer UI), mounted in one place."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import health
from app.auth.router import router as auth_router
from app.datasets.router import router as datasets_router
from app.finetune.export_router import router as export_router
from app.finetune.router import auto_router
from app.finetune.router import router as finetune_router
from app.generation.router import router as generation_router
from app.jobs.router import router as jobs_router
from app.ops.router import router as ops_router
from app.review.router import router as review_router
from app.schedules.router import router as schedules_router
from app.web.router import router as web_router

api_router = APIRouter()
for room in (
    health.router,
    auth_router,
    datasets_router,
    generation_router,
    schedules_router,
    jobs_router,
    finetune_router,
    auto_router,
    export_router,
    review_router,
    ops_router,
    web_router,
):
    api_router.include_router(room)
