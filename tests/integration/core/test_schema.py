"""The schema on SQLite and on a real PostgreSQL server: migrations match the models, and CHECK constraints
refuse rows that break the data model's rules."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

import app.auth.models  # noqa: F401 (every table in the metadata)
import app.datasets.models  # noqa: F401
import app.generation.models  # noqa: F401
import app.review.models  # noqa: F401
from app.core.db import (
    PROJECT_ROOT,
    Base,
    create_db_engine,
    in_models,
    normalize_database_url,
    run_migrations,
)


def alembic_config(url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = normalize_database_url(url)
    return config


def test_migrations_create_every_table_and_are_idempotent(database_url: str) -> None:
    run_migrations(database_url)
    run_migrations(database_url)  # a second run is a no-op
    engine = create_db_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"dataset", "seed_task", "generation_job", "generation_reply", "item", "alembic_version"} <= tables


# Expression indexes ("most doubtful first") cannot be reflected on SQLite; their columns are compared anyway.
@pytest.mark.filterwarnings("ignore:.*expression-based index:UserWarning")
@pytest.mark.filterwarnings("ignore:.*expression-based index:sqlalchemy.exc.SAWarning")
def test_the_migrated_schema_is_exactly_what_the_models_declare(database_url: str) -> None:
    run_migrations(database_url)
    engine = create_db_engine(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": in_models})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def _insert(conn: Any, table: str, **values: Any) -> None:
    columns = ", ".join(values)
    params = ", ".join(f":{k}" for k in values)
    conn.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({params})"), values)


JOB = {
    "dataset_id": 1,
    "params": "{}",
    "status": "queued",
    "cancel_requested": False,
    "requested": 5,
    "requests": 0,
    "prompts": 0,
    "raw": 0,
    "parsed": 0,
    "filtered": "{}",
    "duplicates": 0,
    "accepted": 0,
    "errors": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "attempt": 0,
    "created_at": "2026-12-01 00:00:00",
    "backend": "local",
    "seed": 1,
}
ITEM = {
    "dataset_id": 1,
    "instruction": "Name a river.",
    "input": "",
    "output": "Nile",
    "status": "pending",
    "labels": "{}",
    "quality": "{}",
    "version": 1,
    "created_at": "2026-12-01 00:00:00",
}


@pytest.mark.parametrize(
    ("table", "changes"),
    [
        ("generation_job", {"status": "paused"}),
        ("generation_job", {"accepted": -1}),
        ("generation_job", {"raw": 1, "parsed": 2}),
        ("generation_job", {"status": "running"}),  # running without a lease
        ("item", {"status": "maybe"}),
        ("item", {"status": "filtered"}),  # filtered without a reason
        ("item", {"filter_reason": "too_short"}),  # a reason on a pending item
        ("item", {"status": "filtered", "filter_reason": "near_duplicate", "duplicate_signal": "vibes"}),
        ("item", {"nearest_rouge_l": 1.5}),
        ("item", {"fuzzy_score": -3}),
        ("item", {"nearest_kind": "job"}),
        ("item", {"instruction": ""}),
        ("item", {"version": 0}),
    ],
)
def test_check_constraints_refuse_rows_that_break_the_rules(
    database_url: str, table: str, changes: dict[str, Any]
) -> None:
    run_migrations(database_url)
    engine = create_db_engine(database_url)
    with engine.begin() as conn:
        _insert(
            conn, "dataset", id=1, name="d", description="", settings="{}", created_at="2026-12-01 00:00:00"
        )
        _insert(conn, "generation_job", **JOB)  # the valid rows go in
        _insert(conn, "item", **ITEM)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _insert(conn, table, **{**(JOB if table == "generation_job" else ITEM), **changes})
    engine.dispose()


def test_upgrading_a_database_of_the_first_schema_keeps_its_rows(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "0001")
    engine = create_db_engine(database_url)
    with engine.begin() as conn:
        _insert(
            conn, "dataset", id=1, name="old", description="", settings="{}", created_at="2026-11-30 00:00:00"
        )
        old_job = {k: v for k, v in JOB.items() if k not in ("backend", "seed", "requests", "errors")}
        _insert(
            conn, "generation_job", **{**old_job, "status": "succeeded", "accepted": 1, "parsed": 1, "raw": 1}
        )
        _insert(conn, "item", **{**ITEM, "job_id": 1})
    command.upgrade(config, "head")
    with engine.connect() as conn:
        job = conn.execute(text("SELECT backend, requests, errors, accepted FROM generation_job")).one()
        item = conn.execute(text("SELECT instruction, job_id, reply_id FROM item")).one()
    assert tuple(job) == ("local", 0, 0, 1)
    assert tuple(item) == ("Name a river.", 1, None)
    command.downgrade(config, "0001")  # and back, with the rows still there
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM item")).scalar() == 1
    engine.dispose()
