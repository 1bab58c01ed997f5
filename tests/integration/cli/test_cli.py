"""The `sprout` CLI in-process (Typer's runner) on a temporary SQLite database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import app, common
from app.core.config import get_settings
from app.core.db import PROJECT_ROOT, create_db_engine, make_session_factory, run_migrations, transaction
from app.datasets.models import Dataset
from app.generation.models import GenerationJob, Item, ItemStatus
from tests.support.sim_server import SimServer, running_sim_server

runner = CliRunner()
DEFAULT_SEEDS = PROJECT_ROOT / "seeds" / "default.jsonl"


@pytest.fixture
def database(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SPROUT_DATABASE_URL", url)
    for console in (
        common.console,
        common.err,
    ):  # wide enough that rich does not wrap what the tests look for
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


@pytest.fixture(scope="module")
def sim(shared_data: Path) -> Iterator[SimServer]:
    with running_sim_server(pool=str(shared_data / "bench_instructions.jsonl.gz"), seed=2) as server:
        yield server


def with_backend(monkeypatch: pytest.MonkeyPatch, sim: SimServer) -> None:
    monkeypatch.setenv(
        "SPROUT_BACKENDS",
        json.dumps({"sim": json.loads(sim.backend_settings(max_in_flight=4).model_dump_json())}),
    )
    get_settings.cache_clear()


def test_generate_runs_in_the_foreground_and_prints_a_summary(database, sim, monkeypatch) -> None:
    with_backend(monkeypatch, sim)
    runner.invoke(app, ["import-seeds", str(DEFAULT_SEEDS), "--dataset", "d"])
    result = runner.invoke(app, ["generate", "-d", "d", "-n", "12", "--backend", "sim", "--choices", "2"])
    assert result.exit_code == 0, result.output
    assert "generation job 1: succeeded" in result.output and "sim" in result.output
    sessions = make_session_factory(create_db_engine(database))
    with sessions() as session:
        job = session.get(GenerationJob, 1)
        assert job.accepted >= 12 and job.backend == "sim"
        assert (
            session.scalar(select(func.count()).select_from(Item).where(Item.status == ItemStatus.pending))
            == job.accepted
        )


def test_a_backend_that_is_not_configured_cannot_be_chosen(database, sim, monkeypatch) -> None:
    with_backend(monkeypatch, sim)
    runner.invoke(app, ["import-seeds", str(DEFAULT_SEEDS), "--dataset", "d"])
    for name in ("fake", "scripted", "http://169.254.169.254/v1"):
        result = runner.invoke(app, ["generate", "-d", "d", "-n", "1", "--backend", name])
        assert result.exit_code == 2 and "configured backends: local, sim" in result.output
    listed = runner.invoke(app, ["backends", "list"])
    assert listed.exit_code == 0 and "sim" in listed.output and "127.0.0.1" not in listed.output


def test_dry_run_shows_one_request_and_stores_nothing(database, sim, monkeypatch) -> None:
    with_backend(monkeypatch, sim)
    runner.invoke(app, ["import-seeds", str(DEFAULT_SEEDS), "--dataset", "d"])
    result = runner.invoke(app, ["generate", "-d", "d", "--backend", "sim", "--dry-run", "--seed", "9"])
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output and "nothing stored" in result.output
    assert "prompt: user" in result.output and "reply 0: finish_reason=stop" in result.output
    assert "candidate(s)" in result.output and (
        "accepted" in result.output or "near_duplicate" in result.output
    )
    sessions = make_session_factory(create_db_engine(database))
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 0
        assert session.scalar(select(func.count()).select_from(GenerationJob)) == 0


def test_user_text_is_never_read_as_markup(database) -> None:
    result = runner.invoke(app, ["import-seeds", str(DEFAULT_SEEDS), "--dataset", "[red]x[/red]"])
    assert result.exit_code == 0 and "[red]x[/red]" in result.output
    result = runner.invoke(app, ["generate", "--dataset", "[bold]nope[/bold]", "--count", "1"])
    assert result.exit_code == 2 and "[bold]nope[/bold]" in result.output


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
