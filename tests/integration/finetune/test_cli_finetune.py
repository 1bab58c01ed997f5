"""`sprout finetune` from a shell: a dataset's approved items become a snapshot and a job that runs in the
foreground (the real trainer, two steps); list, show and cancel; refusals name what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app, common
from app.core.config import DEFAULT_MODEL_NAME, get_settings
from app.core.db import create_db_engine, make_session_factory, run_migrations, transaction
from app.datasets.service import create_dataset
from app.generation.models import ItemStatus
from tests.support.items import add_items

runner = CliRunner()
pytestmark = [pytest.mark.slow, pytest.mark.model]


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vllm_checkpoint: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SPROUT_DATABASE_URL", url)
    monkeypatch.setenv(
        "SPROUT_FINETUNE_MODELS",
        json.dumps({DEFAULT_MODEL_NAME: {"path": str(vllm_checkpoint), "max_length": 128}}),
    )
    monkeypatch.setenv("SPROUT_FINETUNE_DIR", str(tmp_path / "finetune"))
    monkeypatch.setenv("SPROUT_FINETUNE_MAX_STEPS", "2")
    for console in (common.console, common.err):
        monkeypatch.setattr(console, "width", 200)
    get_settings.cache_clear()
    run_migrations(url)
    engine = create_db_engine(url)
    with transaction(make_session_factory(engine)) as session:
        add_items(session, create_dataset(session, "approved").id, 24)
        add_items(session, create_dataset(session, "unreviewed").id, 5, ItemStatus.pending)
    engine.dispose()
    yield url
    get_settings.cache_clear()


def test_create_runs_the_job_here_then_list_and_show_it(database: str) -> None:
    created = runner.invoke(
        app, ["finetune", "create", "approved", "--epochs", "1", "--batch-size", "4", "--suffix", "cli"]
    )
    assert created.exit_code == 0, created.output
    assert "queued ftjob-" in created.output and "succeeded" in created.output
    job_id = created.output.split("queued ")[1].split()[0]
    assert f"ft:{DEFAULT_MODEL_NAME}:sprout:cli:" in created.output
    assert "validation loss:" in created.output

    listed = runner.invoke(app, ["finetune", "list"])
    assert listed.exit_code == 0 and job_id in listed.output and "succeeded" in listed.output
    shown = runner.invoke(app, ["finetune", "show", job_id, "--events", "50"])
    assert shown.exit_code == 0 and "The job has successfully completed" in shown.output
    again = runner.invoke(app, ["finetune", "cancel", job_id])
    assert again.exit_code == 2 and "already succeeded" in again.output


def test_refusals_name_what_is_wrong(database: str) -> None:
    empty = runner.invoke(app, ["finetune", "create", "unreviewed"])
    assert empty.exit_code == 2 and "no approved items" in empty.output
    unknown = runner.invoke(app, ["finetune", "create", "approved", "--model", "gpt-4o", "--no-wait"])
    assert unknown.exit_code == 2 and "--model" in unknown.output and "gpt-4o" in unknown.output
    long = runner.invoke(app, ["finetune", "create", "approved", "--suffix", "x" * 19, "--no-wait"])
    assert long.exit_code == 2 and "suffix" in long.output
    queued = runner.invoke(app, ["finetune", "create", "approved", "--no-wait"])
    assert queued.exit_code == 0, queued.output
    job_id = queued.output.split("queued ")[1].split()[0]
    cancelled = runner.invoke(app, ["finetune", "cancel", job_id])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    assert runner.invoke(app, ["finetune", "show", "ftjob-nope"]).exit_code == 2
