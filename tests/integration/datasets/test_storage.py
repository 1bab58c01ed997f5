"""Datasets and seeds on SQLite and on a real PostgreSQL server: Unicode, atomic imports, constraints."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from app.core.db import create_db_engine, run_migrations, transaction
from app.core.errors import ConflictError
from app.datasets.models import Dataset, SeedTask
from app.datasets.seed_formats import SeedInstance, SeedTaskIn
from app.datasets.service import create_dataset, import_seeds
from app.generation.models import Item, ItemStatus

SEEDS = [
    SeedTaskIn(instruction="翻译成英文：你好", instances=(SeedInstance("", "Hello"),)),
    SeedTaskIn(
        instruction="Classify the sentiment of the review.",
        instances=(SeedInstance("I loved it!", "positive"),),
        is_classification=True,
        name="sentiment",
    ),
]


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
