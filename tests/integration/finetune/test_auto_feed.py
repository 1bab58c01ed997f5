"""Auto-feed: a dataset gets a fine-tuning job when N new approved items have accumulated since its last one,
from a fresh snapshot, and never two at once (also when two instances look at the same moment)."""

from __future__ import annotations

import threading

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import DEFAULT_MODEL_NAME
from app.core.db import transaction
from app.finetune.auto import AutoFinetune, feed_all, feed_dataset, set_auto
from app.finetune.models import FineTuneJob, Snapshot
from app.jobs.models import JobStatus
from tests.integration.finetune.test_snapshots import make_dataset
from tests.support.items import add_items
from tests.support.service import make_settings


def jobs_of(sessions: sessionmaker[Session], dataset_id: int) -> list[FineTuneJob]:
    with sessions() as session:
        return list(session.scalars(select(FineTuneJob).where(FineTuneJob.dataset_id == dataset_id)))


def test_a_job_is_queued_every_n_approved_items_one_at_a_time(sessions, database_url) -> None:
    settings = make_settings(database_url)
    dataset_id, _ = make_dataset(sessions, "auto", approved=11, pending=5)
    with transaction(sessions) as session:
        set_auto(
            session, dataset_id, AutoFinetune(every=12, model=DEFAULT_MODEL_NAME, suffix="auto"), settings
        )

    assert feed_all(sessions, settings) == []  # 11 approved: not yet
    with transaction(sessions) as session:
        add_items(session, dataset_id, 1)
    (queued,) = feed_all(sessions, settings)
    (job,) = jobs_of(sessions, dataset_id)
    assert job.public_id == queued and job.snapshot_id is not None and job.suffix == "auto"
    with sessions() as session:
        snapshot = session.get(Snapshot, job.snapshot_id)
        assert snapshot.items == 12 and job.training_file_id == snapshot.training_file_id
        assert job.validation_file_id == snapshot.validation_file_id

    with transaction(sessions) as session:
        add_items(session, dataset_id, 30)
    assert feed_all(sessions, settings) == []  # its job is still active: never two at once

    with transaction(sessions) as session:
        session.execute(update(FineTuneJob).values(status=JobStatus.succeeded))
    (second,) = feed_all(sessions, settings)  # 42 approved, 30 new since the last snapshot
    with sessions() as session:
        job = session.scalar(select(FineTuneJob).where(FineTuneJob.public_id == second))
        assert session.get(Snapshot, job.snapshot_id).items == 42
        session.execute(update(FineTuneJob).values(status=JobStatus.succeeded))
        session.commit()
    assert feed_all(sessions, settings) == []  # nothing new since


def test_a_paused_or_unset_dataset_is_left_alone(sessions, database_url) -> None:
    settings = make_settings(database_url)
    dataset_id, _ = make_dataset(sessions, "paused", approved=40)
    make_dataset(sessions, "unset", approved=40)
    with transaction(sessions) as session:
        set_auto(
            session, dataset_id, AutoFinetune(every=1, model=DEFAULT_MODEL_NAME, enabled=False), settings
        )
    assert feed_all(sessions, settings) == []


def test_two_instances_looking_together_queue_one_job(sessions, database_url) -> None:
    settings = make_settings(database_url)
    dataset_id, _ = make_dataset(sessions, "raced", approved=30)
    with transaction(sessions) as session:
        set_auto(session, dataset_id, AutoFinetune(every=10, model=DEFAULT_MODEL_NAME), settings)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def look() -> None:
        try:
            barrier.wait()
            with transaction(sessions) as session:
                feed_dataset(session, dataset_id, settings)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=look) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(jobs_of(sessions, dataset_id)) == 1
