"""What the schedules tests share: settings with a second named backend, a dataset with seeds, a clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select

from app.core.config import Settings
from app.core.db import create_db_engine, make_session_factory, run_migrations, transaction
from app.datasets.seed_formats import SeedInstance, SeedTaskIn
from app.datasets.service import create_dataset, import_seeds
from app.generation.models import GenerationJob
from app.generation.service import cancel_job
from app.jobs.models import JobStatus
from app.llm.registry import BackendRegistry
from app.schedules.models import Schedule, ScheduleRun
from tests.support.databases import fresh_postgres_database
from tests.support.service import make_settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # the injected clock starts here
SEEDS = [
    SeedTaskIn(instruction="Name a colour of the sky at noon.", instances=(SeedInstance("", "Blue"),)),
    SeedTaskIn(instruction="翻译成英文：你好", instances=(SeedInstance("", "Hello"),)),
]
# A second backend ("remote"); nothing here contacts it: firing only queues jobs.
BACKENDS = {"remote": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "remote-model"}}


def settings_for(database_url: str, **overrides) -> Settings:  # noqa: ANN003
    return make_settings(database_url, backends=BACKENDS, worker_enabled=False, **overrides)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """One database of each kind per test module (creating and migrating one per test is most of a test's
    time); each test works in a dataset of its own and leaves no schedule behind (`sessions`)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('schedules') / 'sprout.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_sessions(module_database_url: str):  # noqa: ANN201
    run_migrations(module_database_url)
    engine = create_db_engine(module_database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def sessions(module_sessions):  # noqa: ANN001, ANN201
    """The module's database; the test's schedules (and their runs) are deleted afterwards, so nothing due in
    one test fires in the next."""
    yield module_sessions
    with transaction(module_sessions) as session:
        session.execute(delete(Schedule))


@pytest.fixture
def settings(module_database_url: str) -> Settings:
    return settings_for(module_database_url)


@pytest.fixture
def registry(settings: Settings) -> BackendRegistry:
    return BackendRegistry.from_settings(settings)


def new_dataset(sessions, name: str, *, seeds: bool = True, unique: bool = True) -> int:  # noqa: ANN001
    """A dataset (with seed tasks unless told otherwise); `unique` adds a suffix to the name."""
    with transaction(sessions) as session:
        dataset = create_dataset(session, f"{name}-{uuid.uuid4().hex[:8]}" if unique else name)
        if seeds:
            import_seeds(session, dataset, SEEDS, source="test")
        return dataset.id


@pytest.fixture
def dataset_id(sessions) -> int:  # noqa: ANN001
    return new_dataset(sessions, "scheduled")


def runs_of(sessions, schedule_id: int) -> list[ScheduleRun]:  # noqa: ANN001
    with sessions() as session:
        return list(
            session.scalars(
                select(ScheduleRun)
                .where(ScheduleRun.schedule_id == schedule_id)
                .order_by(ScheduleRun.fire_time)
            )
        )


def schedule_row(sessions, schedule_id: int) -> Schedule:  # noqa: ANN001
    with sessions() as session:
        return session.get(Schedule, schedule_id)


def jobs_of_dataset(sessions, dataset_id: int) -> list[GenerationJob]:  # noqa: ANN001
    with sessions() as session:
        return list(
            session.scalars(
                select(GenerationJob).where(GenerationJob.dataset_id == dataset_id).order_by(GenerationJob.id)
            )
        )


def end_job(sessions, job_id: int) -> None:  # noqa: ANN001
    """The job is over (cancelled while queued): the schedule may queue its next one."""
    with transaction(sessions) as session:
        assert cancel_job(session, job_id).status == JobStatus.cancelled
