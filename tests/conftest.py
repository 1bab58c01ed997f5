"""Shared test fixtures. Real data comes from ../shared/data beside the checkout (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One real OpenAI-compatible server (the embedded model over HTTP) per session, shared by every module.
pytest_plugins = ["tests.support.openai_fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SPROUT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory holding self_instruct_seed_tasks.jsonl and bench_instructions.jsonl.gz.

    A missing directory is a failure, not a skip: CI always has it, and a silent skip would hide the real-data tests.
    """
    if not (SHARED_DATA / "bench_instructions.jsonl.gz").is_file():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set SPROUT_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path):
    """A migrated-to-nothing, empty database of each kind the service supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sprout.db'}"
        return
    from tests.support.databases import fresh_postgres_database

    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def sessions(database_url: str):
    """A session factory on a freshly migrated database of each kind."""
    from app.core.db import create_db_engine, make_session_factory, run_migrations

    run_migrations(database_url)
    engine = create_db_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()
