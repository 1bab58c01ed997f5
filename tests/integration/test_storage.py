"""Storage on SQLite and on a real PostgreSQL server: migrations, constraints, claims, counts, Unicode."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from app.core.seed_formats import SeedInstance, SeedTaskIn
from app.datasets import ConflictError, create_dataset, dataset_counts, import_seeds
from app.db import create_db_engine, make_session_factory, run_migrations, transaction
from app.generation.jobs import claim_next_job, queue_job, renew_lease, request_cancel, requeue_expired_jobs
from app.generation.params import GenerationParams
from app.models import Dataset, GenerationJob, Item, ItemStatus, JobStatus, SeedTask

SEEDS = [
    SeedTaskIn(instruction="翻译成英文：你好", instances=(SeedInstance("", "Hello"),)),
    SeedTaskIn(
        instruction="Classify the sentiment of the review.",
        instances=(SeedInstance("I loved it!", "positive"),),
        is_classification=True,
        name="sentiment",
    ),
]


@pytest.fixture
def sessions(database_url: str):
    run_migrations(database_url)
    engine = create_db_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_migrations_create_every_table_and_are_idempotent(database_url: str) -> None:
    run_migrations(database_url)
    run_migrations(database_url)  # a second run is a no-op
    engine = create_db_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"dataset", "seed_task", "generation_job", "item", "alembic_version"} <= tables


def test_seed_import_round_trips_unicode_and_skips_existing(sessions) -> None:
    with transaction(sessions) as session:
        dataset = create_dataset(session, "zh-en")
        first = import_seeds(session, dataset, SEEDS, source="test")
    with transaction(sessions) as session:
        again = import_seeds(session, session.get(Dataset, dataset.id), SEEDS, source="test")
    assert (first.imported, first.skipped_existing, first.total_seeds) == (2, 0, 2)
    assert (again.imported, again.skipped_existing, again.total_seeds) == (0, 2, 2)
    with sessions() as session:
        stored = session.scalars(select(SeedTask).order_by(SeedTask.id)).all()
        assert [s.instruction for s in stored] == [
            "翻译成英文：你好",
            "Classify the sentiment of the review.",
        ]
        assert stored[0].instances == [{"input": "", "output": "Hello"}]
        assert stored[1].is_classification is True and stored[1].name == "sentiment"


def test_failed_import_writes_nothing(sessions) -> None:
    with transaction(sessions) as session:
        dataset_id = create_dataset(session, "atomic").id
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        import_seeds(session, session.get(Dataset, dataset_id), SEEDS, source="t")
        raise RuntimeError("the request failed after the rows were added")
    with sessions() as session:
        assert session.scalar(select(SeedTask.id)) is None


def test_dataset_names_are_unique(sessions) -> None:
    with transaction(sessions) as session:
        create_dataset(session, "same")
    with pytest.raises(ConflictError), transaction(sessions) as session:
        create_dataset(session, "same")


def test_foreign_keys_are_enforced(sessions) -> None:
    with pytest.raises(IntegrityError), transaction(sessions) as session:
        session.add(Item(dataset_id=9999, instruction="orphan"))


def test_a_job_is_claimed_once_and_counts_add_up(sessions) -> None:
    with transaction(sessions) as session:
        dataset = create_dataset(session, "jobs")
        import_seeds(session, dataset, SEEDS, source="test")
        job = queue_job(session, dataset.id, GenerationParams(count=3))
        dataset_id, job_id = dataset.id, job.id
    with transaction(sessions) as session:
        assert claim_next_job(session, "worker-a", timedelta(minutes=1)) == job_id
    with transaction(sessions) as session:
        assert claim_next_job(session, "worker-b", timedelta(minutes=1)) is None
        assert renew_lease(session, job_id, "worker-b", timedelta(minutes=1)) is False
        assert renew_lease(session, job_id, "worker-a", timedelta(minutes=1)) is True
    with transaction(sessions) as session:
        for status, reason in [(ItemStatus.pending, None), (ItemStatus.filtered, "empty_output")]:
            session.add(
                Item(
                    dataset_id=dataset_id, job_id=job_id, instruction="x", status=status, filter_reason=reason
                )
            )
    with sessions() as session:
        counts = dataset_counts(session, [dataset_id])[dataset_id]
        job = session.get(GenerationJob, job_id)
        assert job.status == JobStatus.running and job.attempt == 1 and job.worker_id == "worker-a"
    assert counts == {
        "seeds": 2,
        "jobs": 1,
        "items": 2,
        "pending": 1,
        "approved": 0,
        "rejected": 0,
        "filtered": 1,
    }


def test_expired_leases_are_requeued_and_cancel_rules(sessions) -> None:
    with transaction(sessions) as session:
        dataset = create_dataset(session, "leases")
        import_seeds(session, dataset, SEEDS, source="test")
        running = queue_job(session, dataset.id, GenerationParams(count=1)).id
        queued = queue_job(session, dataset.id, GenerationParams(count=1)).id
    with transaction(sessions) as session:
        assert claim_next_job(session, "dead-worker", timedelta(seconds=-1), job_id=running) == running
    with transaction(sessions) as session:
        assert requeue_expired_jobs(session) == 1
        assert session.get(GenerationJob, running).status == JobStatus.queued
        assert request_cancel(session, queued).status == JobStatus.cancelled
    with pytest.raises(ConflictError), transaction(sessions) as session:
        request_cancel(session, queued)


def test_item_version_increments_on_update(sessions) -> None:
    with transaction(sessions) as session:
        dataset = create_dataset(session, "versions")
        item = Item(dataset_id=dataset.id, instruction="写一首关于秋天的诗", labels={"language": "zh"})
        session.add(item)
        session.flush()
        item_id = item.id
    with transaction(sessions) as session:
        item = session.get(Item, item_id)
        assert item.version == 1 and item.labels == {"language": "zh"}
        item.status = ItemStatus.approved
    with sessions() as session:
        assert session.get(Item, item_id).version == 2


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    run_migrations(url)
    engine = create_db_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()
