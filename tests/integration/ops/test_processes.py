"""The real processes an operator runs: `sprout worker --metrics-port` serves its own metrics and logs one JSON
object per line, each line about a job carrying the job's, dataset's and worker's ids; `sprout serve
--log-format json` sends uvicorn's own lines through the same JSON handler and answers /metrics without a
token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app.cli import app as cli
from app.core.config import Settings, get_settings
from app.core.db import create_db_engine, make_session_factory, run_migrations, transaction
from app.datasets.seed_formats import SeedInstance, SeedTaskIn
from app.datasets.service import create_dataset, import_seeds
from app.generation.models import GenerationJob
from app.generation.params import GenerationParams
from app.generation.service import queue_job
from app.jobs.models import JobStatus, WorkerProcess
from app.llm.registry import BackendRegistry
from tests.integration.ops.scrape import Scrape
from tests.support.app_server import free_port
from tests.support.processes import tail
from tests.support.sim_server import running_sim_server

REPO = Path(__file__).resolve().parents[3]
SEEDS = [
    SeedTaskIn(
        instruction="Name three primary colours.", instances=(SeedInstance("", "Red, blue, yellow."),)
    ),
    SeedTaskIn(instruction="翻译成英文：你好", instances=(SeedInstance("", "Hello"),)),
]
KEYS = {"time", "level", "logger", "message", "worker_id", "job_id", "job_kind", "dataset_id"}


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes]]:
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SPROUT_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args], cwd=REPO, env={**environ, **env}, stdout=out, stderr=err
    )
    return process, out, err


def stop(process: subprocess.Popen[bytes], err: IO[bytes], *codes: int) -> None:
    """SIGTERM and wait: a clean exit (0, or `codes`: uvicorn re-raises the signal once it shut down)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=30) in (0, *codes), tail(err)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for(condition: Any, timeout: float, what: str, log: IO[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{tail(log)}")


def json_lines(err: IO[bytes]) -> list[dict[str, Any]]:
    """Every line the process wrote to stderr, each one JSON object with the same keys."""
    err.flush()
    err.seek(0)
    text = err.read().decode("utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the process logged nothing"
    parsed = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(record, dict) and KEYS <= set(record), record
        parsed.append(record)
    return parsed


def test_a_worker_process_serves_its_own_metrics_and_logs_json_with_its_ids(database_url: str) -> None:
    run_migrations(database_url)
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    port = free_port()
    with running_sim_server(latency="lognormal", median=0.05, sigma=0.3) as sim:
        backends = {
            "sim": {"kind": "openai", "base_url": sim.base_url, "model": sim.model, "max_in_flight": 2}
        }
        settings = Settings(_env_file=None, backends=backends, default_backend="sim")  # type: ignore[call-arg]
        with transaction(sessions) as session:
            dataset = create_dataset(session, "logged")
            import_seeds(session, dataset, SEEDS, source="test")
            dataset_id = dataset.id
            job_id = queue_job(
                session,
                dataset_id,
                GenerationParams(count=6),
                settings,
                BackendRegistry.from_settings(settings),
            ).id
        env = {
            "SPROUT_DATABASE_URL": database_url,
            "SPROUT_BACKENDS": json.dumps(backends),
            "SPROUT_DEFAULT_BACKEND": "sim",
            "SPROUT_WORKER_HEARTBEAT_SECONDS": "0.5",
        }
        process, _out, err = start(["worker", "--metrics-port", str(port), "--log-format", "json"], env)
        try:

            def finished() -> bool:
                with sessions() as session:
                    return session.get(GenerationJob, job_id).status.is_final

            wait_for(finished, 60, "the job to finish", err)
            page = Scrape(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
            with sessions() as session:
                job = session.get(GenerationJob, job_id)
                (worker,) = session.scalars(select(WorkerProcess)).all()
        finally:
            stop(process, err)
    engine.dispose()
    assert job.status is JobStatus.succeeded, job.error
    # Its own figures: its heartbeat, its claim, its accept steps, its requests to the backend; no fleet figures.
    assert abs(page.value("sprout_worker_heartbeat_timestamp_seconds", worker=worker.id) - time.time()) < 30
    assert page.value("sprout_jobs_claimed_total", kind="generation") == 1
    assert page.value("sprout_jobs_finished_total", kind="generation", outcome="succeeded") == 1
    assert page.value("sprout_accept_step_seconds_count") >= 1
    assert page.value("sprout_llm_request_seconds_count", backend="sim") >= job.requests - job.errors > 0
    assert "sprout_jobs" not in page.samples
    # Its logs: JSON lines only; those about the job carry the job's, the dataset's and the worker's ids.
    lines = json_lines(err)
    about_job = [line for line in lines if line["job_id"] == job_id or f"job {job_id}" in line["message"]]
    assert any("finished" in line["message"] for line in about_job), [line["message"] for line in lines]
    for line in about_job:
        assert (line["job_id"], line["dataset_id"], line["worker_id"]) == (job_id, dataset_id, worker.id), (
            line
        )
    assert {line["worker_id"] for line in lines if line["logger"].startswith("app.jobs")} == {worker.id}


def test_serve_logs_json_through_one_handler_uvicorn_included(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "SPROUT_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "SPROUT_WORKER_HEARTBEAT_SECONDS": "0.5",
    }
    process, out, err = start(["serve", "--port", str(port), "--no-bootstrap", "--log-format", "json"], env)
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 60, "the service to answer", err)
        metrics = httpx.get(f"{base}/metrics", timeout=10)  # no token: public, like health
        unauthorized = httpx.get(f"{base}/v1/usage", timeout=10)
    finally:
        stop(process, err, -signal.SIGTERM)
    assert metrics.status_code == 200 and unauthorized.status_code == 401
    page = Scrape(metrics.text)
    assert page.value("sprout_workers", state="alive") == 1 and page.value("sprout_fleet_scrape_error") == 0
    lines = json_lines(err)
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access", "app.jobs.worker"} <= loggers, loggers
    assert any("GET /metrics" in line["message"] for line in lines if line["logger"] == "uvicorn.access")
    assert any("Application startup complete" in line["message"] for line in lines)
    assert not any("color_message" in line for line in lines)
    (worker_id,) = {line["worker_id"] for line in lines if line["logger"] == "app.jobs.worker"}
    assert worker_id is not None
    out.seek(0)
    assert b"reviewer UI" in out.read()  # the banner stays on stdout, for people


@pytest.fixture
def no_settings_cache():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_serve_refuses_an_unknown_log_format(no_settings_cache, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("SPROUT_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    result = CliRunner().invoke(cli, ["serve", "--log-format", "xml"])
    assert result.exit_code == 2 and "--log-format must be json or text" in result.output
