"""Auto-feed: a dataset asks for a fine-tuning job whenever N new approved items have accumulated since its
last one. The worker looks now and then; a job is made from a fresh snapshot (train and validation files),
never two at once per dataset (one transaction per dataset, serialized across instances, checks and creates).
"""

from __future__ import annotations

import logging
import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import serialize, transaction
from app.core.errors import InvalidFieldError
from app.datasets.models import Dataset
from app.datasets.service import get_dataset
from app.finetune import service
from app.finetune.models import FineTuneJob, Snapshot
from app.finetune.schemas import SUFFIX_PATTERN, Hyperparameters, JobCreate
from app.finetune.snapshots import create_snapshot
from app.generation.models import ItemCount, ItemStatus
from app.jobs.models import FINAL_STATUSES

log = logging.getLogger(__name__)
AUTO_FEED_LOCK = 0x5350_4654  # "SPFT": one auto-feed decision per dataset at a time
SETTINGS_KEY = "finetune"


class AutoFinetune(BaseModel):
    """A dataset's auto-feed: every `every` new approved items, a job on `model`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    every: int = Field(ge=1, le=10_000_000, description="New approved items that trigger a job.")
    model: str = Field(min_length=1, max_length=200, description="A base model configured for fine-tuning.")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    suffix: Annotated[str, StringConstraints(max_length=18, pattern=SUFFIX_PATTERN)] | None = None
    validation_fraction: float = Field(default=0.1, ge=0, le=0.5)


def auto_settings(dataset: Dataset) -> AutoFinetune | None:
    stored = (dataset.settings or {}).get(SETTINGS_KEY)
    return AutoFinetune.model_validate(stored) if stored else None


def set_auto(session: Session, dataset_id: int, body: AutoFinetune, settings: Settings) -> AutoFinetune:
    if body.model not in settings.finetune_models:
        names = ", ".join(sorted(settings.finetune_models))
        raise InvalidFieldError(
            "model", f"{body.model!r} is not configured for fine-tuning (configured: {names})"
        )
    dataset = get_dataset(session, dataset_id)
    dataset.settings = {**(dataset.settings or {}), SETTINGS_KEY: body.model_dump(mode="json")}
    return body


def _approved(session: Session, dataset_id: int) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(ItemCount.n), 0)).where(
            ItemCount.dataset_id == dataset_id, ItemCount.status == ItemStatus.approved.value
        )
    )
    return int(total or 0)


def feed_dataset(session: Session, dataset_id: int, settings: Settings) -> FineTuneJob | None:
    """Queue a job for the dataset if its auto-feed asks for one now (the caller's transaction commits)."""
    serialize(session, AUTO_FEED_LOCK, dataset_id)
    dataset = get_dataset(session, dataset_id)
    auto = auto_settings(dataset)
    if auto is None or not auto.enabled or auto.model not in settings.finetune_models:
        return None
    active = session.scalar(
        select(FineTuneJob.id).where(
            FineTuneJob.dataset_id == dataset_id, FineTuneJob.status.not_in(list(FINAL_STATUSES))
        )
    )
    if active is not None:
        return None
    last = session.scalar(
        select(Snapshot.items)
        .join(FineTuneJob, FineTuneJob.snapshot_id == Snapshot.id)
        .where(FineTuneJob.dataset_id == dataset_id)
        .order_by(FineTuneJob.id.desc())
        .limit(1)
    )
    approved = _approved(session, dataset_id)
    train = approved - math.ceil(approved * auto.validation_fraction)
    if approved - (last or 0) < auto.every or train < settings.finetune_min_examples:
        return None
    snapshot = create_snapshot(
        session,
        dataset_id,
        created_by="auto-feed",
        validation_fraction=auto.validation_fraction,
        settings=settings,
    )
    files = service.file_ids(session, [snapshot])
    body = JobCreate(
        model=auto.model,
        training_file=files[snapshot.training_file_id],
        validation_file=files.get(snapshot.validation_file_id) if snapshot.validation_file_id else None,
        hyperparameters=auto.hyperparameters,
        suffix=auto.suffix,
        metadata={"auto_feed": "true", "dataset": dataset.name[:512]},
    )
    job = service.create_job(
        session, body, settings, "auto-feed", dataset_id=dataset_id, snapshot_id=snapshot.id
    )
    service.add_event(
        session, job.id, f"Queued by dataset {dataset.name!r}: {approved} approved items (every {auto.every})"
    )
    return job


def feed_all(sessions: sessionmaker[Session], settings: Settings) -> list[str]:
    """One look at every dataset with auto-feed on; the public ids of the jobs it queued."""
    with sessions() as session:
        candidates = [
            d.id
            for d in session.scalars(select(Dataset))
            if (auto := auto_settings(d)) is not None and auto.enabled
        ]
    queued = []
    for dataset_id in candidates:
        try:
            with transaction(sessions) as session:
                job = feed_dataset(session, dataset_id, settings)
                if job is not None:
                    queued.append(job.public_id)
        except Exception:  # noqa: BLE001 (one dataset's problem must not stop the others)
            log.exception("auto-feed of dataset %s failed", dataset_id)
    return queued
