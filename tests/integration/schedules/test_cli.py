"""`sprout schedules ...` against a temporary SQLite file: the path a user takes (create, then the run history)
as real `python -m app.cli` processes; the other commands in-process (Typer's runner) on the same file, to keep the test
quick. Untrusted text (a hostile schedule name, job messages) is printed as it is, never as rich markup."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app, common
from app.core.config import get_settings
from app.core.db import create_db_engine, make_session_factory, run_migrations
from app.llm.registry import BackendRegistry
from app.schedules import service
from tests.integration.schedules.conftest import new_dataset, runs_of, schedule_row
from tests.support.service import make_settings

REPO_ROOT = Path(__file__).resolve().parents[3]
NAME = "[bold red]nightly[/]"  # a name that would be markup if printed as rich text
runner = CliRunner()


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SPROUT_DATABASE_URL", url)
    for console in (common.console, common.err):  # wide enough that rich does not wrap what is looked for
        monkeypatch.setattr(console, "width", 250)
    get_settings.cache_clear()
    run_migrations(url)
    engine = create_db_engine(url)
    yield url, make_session_factory(engine)
    engine.dispose()
    get_settings.cache_clear()


def sprout(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m app.cli ARGS` in a directory of its own (no .env of the checkout), wide output."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SPROUT_DATABASE_URL": url, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_schedules_from_the_command_line(database, tmp_path: Path) -> None:
    url, sessions = database
    dataset_id = new_dataset(sessions, "mine", unique=False)
    created = sprout(
        url,
        tmp_path,
        "schedules",
        "create",
        NAME,
        "--dataset",
        "mine",
        "--cron",
        "0 9 * * *",
        "--timezone",
        "Asia/Shanghai",
        "--count",
        "4",
        "--params",
        '{"language": "zh"}',
        "--max-runs",
        "3",
    )
    assert created.returncode == 0, created.stderr
    assert f"created schedule {NAME} (id 1)" in created.stdout
    fires = [line for line in created.stdout.splitlines() if "fires at" in line]
    assert len(fires) == 3 and all("01:00:00 UTC" in line for line in fires)  # 09:00 in Shanghai

    shown = invoke("schedules", "show", NAME)
    assert f"{NAME}  (id 1)  active  0 9 * * *  in Asia/Shanghai" in shown
    assert '"count": 4' in shown and '"language": "zh"' in shown
    assert "stops after 3 runs" in shown and "backend local" in shown
    assert [line for line in shown.splitlines() if "fires at" in line] == fires

    # Each mistake is a message naming what is wrong, exit code 2, and nothing stored.
    for args, says in [
        (["--cron", "61 * * * *"], "cron: '61 * * * *'"),
        (["--cron", "0 9 * * *", "--timezone", "Moon/Base"], "timezone: 'Moon/Base'"),
        (["--cron", "0 9 * * *", "--count", "0"], "params.count"),
        (["--cron", "0 9 * * *", "--params", "[1]"], "--params: a JSON object"),
        (["--cron", "0 9 * * *", "--backend", "nowhere"], "unknown backend 'nowhere'"),
    ]:
        refused = runner.invoke(app, ["schedules", "create", "other", "--dataset", "mine", *args])
        assert refused.exit_code == 2 and says in refused.output, (args, refused.output)
    missing = runner.invoke(app, ["schedules", "create", "x", "--dataset", "nope", "--cron", "@daily"])
    assert missing.exit_code == 2 and "dataset 'nope' not found" in missing.output
    assert "other" not in invoke("schedules", "list")

    listed = invoke("schedules", "list", "--dataset", "mine")
    assert NAME in listed and "active" in listed and "Asia/Shanghai" in listed

    updated = invoke(
        "schedules", "update", "1", "--cron", "*/5 * * * *", "--timezone", "UTC", "--max-runs", "0"
    )
    assert "*/5 * * * *  in UTC" in updated and "stops after" not in updated
    assert schedule_row(sessions, 1).max_runs is None
    assert runner.invoke(app, ["schedules", "update", NAME]).exit_code == 2  # nothing to change

    assert f"paused {NAME}" in invoke("schedules", "pause", NAME)
    assert "paused" in invoke("schedules", "show", NAME)
    resumed = invoke("schedules", "resume", NAME)
    assert f"resumed {NAME}: next fire at" in resumed

    # Two firings (the worker's job), then the history as a user reads it.
    settings = make_settings(url)
    registry = BackendRegistry.from_settings(settings)
    start = schedule_row(sessions, 1).next_fire_at
    (job_id,) = service.fire_due(sessions, settings, registry, "worker-x", now=start)
    service.fire_due(sessions, settings, registry, "worker-x", now=start + timedelta(minutes=10))
    assert [r.outcome for r in runs_of(sessions, 1)] == ["queued", "skipped"]
    history = sprout(url, tmp_path, "schedules", "runs", NAME)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    latest = next(line for line in lines if (start + timedelta(minutes=10)).strftime("%H:%M:%S") in line)
    first = next(line for line in lines if start.strftime("%Y-%m-%d %H:%M:%S") in line)
    assert "skipped" in latest and "2" in latest and f"generation job {job_id} from an earlier run" in latest
    assert "queued" in first and str(job_id) in first and "0/4" in first

    assert f"deleted {NAME}" in invoke("schedules", "delete", NAME)
    gone = runner.invoke(app, ["schedules", "show", NAME])
    assert gone.exit_code == 2 and "not found" in gone.output
    assert dataset_id == 1
