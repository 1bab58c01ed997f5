"""The `sprout` CLI in-process (Typer's runner) on a temporary SQLite database."""

from __future__ import annotations

import json

import pytest
from app.models import Dataset, Item, ItemStatus
from sqlalchemy import select
from typer.testing import CliRunner

from app import cli
from app.cli import app
from app.core.config import PROJECT_ROOT, get_settings
from app.core.db import create_db_engine, make_session_factory, run_migrations, transaction

runner = CliRunner()
DEFAULT_SEEDS = PROJECT_ROOT / "seeds" / "default.jsonl"


@pytest.fixture
def database(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SPROUT_DATABASE_URL", url)
    for console in (cli.console, cli.err):  # wide enough that rich does not wrap what the tests look for
        monkeypatch.setattr(console, "width", 200)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_import_seeds_then_again(database) -> None:
    first = runner.invoke(app, ["import-seeds", str(DEFAULT_SEEDS), "--dataset", "mine"])
    assert first.exit_code == 0, first.output
    assert "imported 109 seed tasks" in first.output
    again = runner.invoke(app, ["import-seeds", str(DEFAULT_SEEDS), "--dataset", "mine"])
    assert "imported 0 seed tasks, skipped 109 already present, 109 in all" in again.output


def test_malformed_seed_file_names_line_and_field_and_imports_nothing(database, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"instruction": "Say hi.", "instances": [{"input": "", "output": "Hi"}]}\n{"instruction": ""}\n'
    )
    result = runner.invoke(app, ["import-seeds", str(bad), "--dataset", "bad"])
    assert result.exit_code == 2
    assert (
        "line 2" in result.output
        and "instruction" in result.output
        and "nothing was imported" in result.output
    )
    run_migrations(database)
    sessions = make_session_factory(create_db_engine(database))
    with sessions() as session:
        assert session.scalar(select(Dataset.id).where(Dataset.name == "bad")) is None


def test_generate_needs_a_dataset_with_seeds(database) -> None:
    result = runner.invoke(app, ["generate", "--dataset", "nope", "--count", "1"])
    assert result.exit_code == 2 and "dataset 'nope' not found" in result.output


def test_generate_runs_in_the_foreground_and_prints_a_summary(database) -> None:
    runner.invoke(app, ["import-seeds", str(DEFAULT_SEEDS), "--dataset", "d"])
    # The fake backend answers prose that is no task at all: the job spends its budget and says so.
    result = runner.invoke(app, ["generate", "-d", "d", "-n", "1", "--backend", "fake", "--max-prompts", "3"])
    assert result.exit_code == 0, result.output
    assert "generation job 1: succeeded" in result.output
    assert "prompt budget of 3 used up" in result.output


def test_items_list_prints_model_text_verbatim(database) -> None:
    runner.invoke(app, ["import-seeds", str(DEFAULT_SEEDS), "--dataset", "d"])
    sessions = make_session_factory(create_db_engine(database))
    with transaction(sessions) as session:
        dataset_id = session.scalar(select(Dataset.id).where(Dataset.name == "d"))
        session.add(Item(dataset_id=dataset_id, instruction="Explain [bold]markup[/bold] please", output="x"))
        session.add(
            Item(dataset_id=dataset_id, instruction="dropped", status=ItemStatus.filtered, filter_reason="r")
        )
    table = runner.invoke(app, ["items", "list", "-d", "d", "--status", "pending"])
    assert table.exit_code == 0, table.output
    assert "[bold]markup[/bold]" in table.output and "dropped" not in table.output
    lines = runner.invoke(app, ["items", "list", "-d", "d", "--json"]).output.splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["pending", "filtered"]
