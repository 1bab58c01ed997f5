"""`sprout worker` as the real process an operator runs: it takes jobs, hands them back on SIGTERM, runs
migrations once under a lock when many start together, and refuses a schema a newer Sprout migrated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from app.core.config import Settings
from app.core.db import create_db_engine, make_session_factory, run_migrations, schema_revisions, transaction
from app.datasets.seed_formats import SeedInstance, SeedTaskIn
from app.datasets.service import create_dataset, import_seeds
from app.generation.models import GenerationJob
from app.generation.params import GenerationParams
from app.generation.service import queue_job
from app.jobs.models import JobStatus, WorkerProcess
from app.llm.registry import BackendRegistry
from tests.support.processes import tail
from tests.support.sim_server import running_sim_server

REPO = Path(__file__).resolve().parents[3]
SEEDS = [
    SeedTaskIn(instruction="翻译成英文：你好", instances=(SeedInstance("", "Hello"),)),
    SeedTaskIn(
        instruction="Name three primary colours.", instances=(SeedInstance("", "Red, blue, yellow."),)
    ),
]


def start_worker(database_url: str, backends: dict | None = None, *extra: str, **env: str):  # noqa: ANN201
    log = tempfile.TemporaryFile()
    environ = {
        **os.environ,
        "SPROUT_DATABASE_URL": database_url,
        "SPROUT_BACKENDS": json.dumps(backends or {}),
        "SPROUT_WORKER_HEARTBEAT_SECONDS": "0.5",
        **env,
    }
    if backends:
        environ["SPROUT_DEFAULT_BACKEND"] = next(iter(backends))
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", *extra], cwd=REPO, env=environ, stdout=log, stderr=log
    )
    return process, log


def wait_for(condition, timeout: float, what: str, log=None) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{tail(log)}" if log is not None else ""))


@pytest.mark.slow
def test_sigterm_hands_the_running_job_back_and_keeps_its_items(database_url: str) -> None:
    run_migrations(database_url)
    sessions = make_session_factory(create_db_engine(database_url))
    with running_sim_server(latency="lognormal", median=0.4, sigma=0.3) as sim:
        backends = {
            "sim": {"kind": "openai", "base_url": sim.base_url, "model": sim.model, "max_in_flight": 2}
        }
        settings = Settings(_env_file=None, backends=backends, default_backend="sim")  # type: ignore[call-arg]
        with transaction(sessions) as session:
            dataset = create_dataset(session, "sigterm")
            import_seeds(session, dataset, SEEDS, source="test")
            job_id = queue_job(
                session,
                dataset.id,
                GenerationParams(count=500),
                settings,
                BackendRegistry.from_settings(settings),
            ).id
        process, log = start_worker(database_url, backends, "--log-format", "json")
        try:

            def accepting() -> bool:
                with sessions() as session:
                    job = session.get(GenerationJob, job_id)
                    return job.status is JobStatus.running and 0 < job.accepted < job.requested

            wait_for(accepting, 60, "the job to accept its first items", log)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, tail(log)
        finally:
            if process.poll() is None:
                process.kill()
    with sessions() as session:
        job = session.get(GenerationJob, job_id)
        assert job.status is JobStatus.queued and job.worker_id is None and job.lease_until is None
        assert (
            0 < job.accepted < job.requested and job.attempt == 1
        )  # its work stays; the next worker resumes
        assert job.busy_seconds > 0
        (worker,) = session.query(WorkerProcess).all()
        assert worker.kind == "worker" and worker.stopped_at is not None
    lines = [json.loads(line) for line in tail(log, 200_000).splitlines() if line.startswith("{")]
    assert any(line.get("job_id") == job_id and line.get("worker_id") == worker.id for line in lines)


def test_many_processes_starting_together_migrate_once(database_url: str) -> None:
    env = {**os.environ, "SPROUT_DATABASE_URL": database_url}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", "migrate"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, outputs
    assert sum("Running upgrade 0004 -> 0005" in out for out in outputs) <= 1  # one of them migrated
    current, head = schema_revisions(database_url)
    assert current == head


def test_a_worker_refuses_a_schema_a_newer_sprout_migrated(database_url: str) -> None:
    run_migrations(database_url)
    engine = create_db_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    engine.dispose()
    process, log = start_worker(database_url)
    assert process.wait(timeout=60) == 2
    message = " ".join(tail(log).split())  # the console wraps long lines
    assert "0099_from_the_future" in message and "newer" in message and "Upgrade Sprout" in message
    current, _ = schema_revisions(database_url)
    assert current == "0099_from_the_future"  # nothing was touched


def test_no_migrate_refuses_an_older_schema_with_the_way_out(database_url: str) -> None:
    process, log = start_worker(database_url, None, "--no-migrate")
    assert process.wait(timeout=60) == 2
    assert "sprout migrate" in " ".join(tail(log).split())


def test_generate_queue_leaves_the_job_to_the_workers_with_its_priority(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    env = {**os.environ, "SPROUT_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "generate", "--seeds", str(REPO / "seeds" / "default.jsonl"),
         "--count", "5", "--queue", "--priority", "7"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "queued generation job" in done.stdout
    with make_session_factory(create_db_engine(url))() as session:
        (job,) = session.query(GenerationJob).all()
        assert (job.status, job.priority, job.requested, job.attempt) == (JobStatus.queued, 7, 5, 0)
