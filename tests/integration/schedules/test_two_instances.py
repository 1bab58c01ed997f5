"""Two service instances (`sprout serve`, each a process with its own worker firing schedules every 0.2 s) share
one database (a SQLite file, and PostgreSQL) and one per-second schedule. Its jobs (count=1) go to a real
simulated OpenAI-compatible server, so many firings really queue, run and finish a job. After ~5 s:
- every fire time has exactly one run, and the runs cover every second from the first to the last exactly once
  (a run standing for n firings comes n seconds after the one before);
- their number is the elapsed seconds (within 2);
- every queued run has a job of its own, and no other job exists: nothing was queued twice;
- each run was fired by one of the two instances' workers, both of which were polling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.auth.roles import Role
from app.auth.service import create_token, create_user
from app.core.db import create_db_engine, make_session_factory, run_migrations, transaction
from app.generation.models import GenerationJob
from app.jobs.models import WorkerProcess
from app.schedules.models import ScheduleRun
from tests.integration.schedules.conftest import new_dataset
from tests.support.app_server import free_port
from tests.support.processes import stop, tail, wait_until_ready
from tests.support.sim_server import SimServer, running_sim_server

REPO_ROOT = Path(__file__).resolve().parents[3]
WINDOW = 5.0  # seconds the schedule runs


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with running_sim_server() as server:
        yield server


@contextmanager
def service_instances(
    database_url: str, sim: SimServer, workdir: Path, n: int
) -> Iterator[list[tuple[str, int]]]:
    """`n` x `python -m app.cli serve` on free ports, started together, each in a directory of its own (no .env
    of the checkout): their base URLs and PIDs. Only these processes are stopped afterwards (SIGTERM: each
    worker hands its running jobs back)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SPROUT_DATABASE_URL": database_url,
        "SPROUT_BACKENDS": '{"sim": ' + sim.backend_settings(max_in_flight=4).model_dump_json() + "}",
        "SPROUT_SCHEDULE_POLL_SECONDS": "0.2",
        "SPROUT_WORKER_POLL_SECONDS": "0.2",
        "SPROUT_WORKER_HEARTBEAT_SECONDS": "1",
    }
    with ExitStack() as stack:
        started = []
        for i in range(n):
            (workdir / f"instance-{i}").mkdir()
            log = stack.enter_context((workdir / f"instance-{i}" / "log.txt").open("w+b"))
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                cwd=workdir / f"instance-{i}",
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            started.append((process, port, log))
        try:
            for i, (process, port, log) in enumerate(started):
                url = f"http://127.0.0.1:{port}"
                wait_until_ready(process, f"{url}/healthz", timeout=60, log=log, name=f"instance {i}")
            yield [(f"http://127.0.0.1:{port}", process.pid) for process, port, _ in started]
        finally:
            for process, _, _ in started:
                if process.poll() is None:
                    process.terminate()
            for i, (process, _, log) in enumerate(started):
                stop(process)
                if process.returncode not in (0, -15):
                    print(f"instance {i} ended with {process.returncode}:\n{tail(log)}")


def test_two_instances_fire_a_per_second_schedule_once_per_second(
    database_url: str, sim: SimServer, tmp_path: Path
) -> None:
    run_migrations(database_url)  # before the instances start, so they do not time their start by it
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    dataset_id = new_dataset(sessions, "every-second")
    with transaction(sessions) as session:
        token, _ = create_token(session, create_user(session, "operator", Role.service), name="test")
    headers = {"Authorization": f"Bearer {token}"}
    with ExitStack() as stack:
        (a_url, a_pid), (b_url, b_pid) = stack.enter_context(
            service_instances(database_url, sim, tmp_path, 2)
        )
        a = stack.enter_context(httpx.Client(base_url=a_url, headers=headers, trust_env=False, timeout=30))
        b = stack.enter_context(httpx.Client(base_url=b_url, headers=headers, trust_env=False, timeout=30))
        created = a.post(
            "/v1/schedules",
            json={
                "name": "every-second",
                "dataset_id": dataset_id,
                "cron": "* * * * * *",
                "backend": "sim",
                "params": {"count": 1, "tasks_per_prompt": 2},
            },
        )
        assert created.status_code == 201, created.text
        schedule_id = created.json()["id"]
        started = time.monotonic()
        while time.monotonic() - started < WINDOW:  # the window the schedule runs in; nothing asserted here
            time.sleep(0.25)
        paused = b.post(f"/v1/schedules/{schedule_id}/pause")
        elapsed = time.monotonic() - started
        assert paused.status_code == 200, paused.text
        with sessions() as session:
            instances = {
                w.id: w.pid
                for w in session.scalars(select(WorkerProcess).where(WorkerProcess.stopped_at.is_(None)))
            }
    # Both instances stopped (their workers hand running jobs back): read what they left.
    with sessions() as session:
        runs = list(
            session.scalars(
                select(ScheduleRun)
                .where(ScheduleRun.schedule_id == schedule_id)
                .order_by(ScheduleRun.fire_time)
            )
        )
        jobs = list(session.scalars(select(GenerationJob).where(GenerationJob.dataset_id == dataset_id)))
    engine.dispose()

    assert sorted(instances.values()) == sorted([a_pid, b_pid])  # each instance's worker was there
    fire_times = [r.fire_time for r in runs]
    assert len(fire_times) == len(set(fire_times))  # one run per fire time
    assert all(t.microsecond == 0 for t in fire_times)
    for before, run in zip(runs, runs[1:], strict=False):
        assert run.fire_time - before.fire_time == timedelta(seconds=run.coalesced), (before, run)
    covered = sum(r.coalesced for r in runs)
    assert abs(covered - elapsed) <= 2, (covered, elapsed)
    assert abs(len(runs) - elapsed) <= 2, (len(runs), elapsed, [r.coalesced for r in runs])

    queued = [r for r in runs if r.outcome == "queued"]
    assert len(queued) >= 2, [(r.outcome, r.message) for r in runs]  # jobs really ran and finished meanwhile
    assert sorted(r.job_id for r in queued) == sorted(j.id for j in jobs)  # one job per queued run, no other
    assert all(j.priority == 0 and j.requested == 1 and j.backend == "sim" for j in jobs)
    for run in runs:
        if run.outcome == "skipped":
            assert "from an earlier run is still" in run.message, run.message
    assert {r.fired_by for r in runs} <= set(instances)
    fired_by = {pid: sum(instances[r.fired_by] == pid for r in runs) for pid in (a_pid, b_pid)}
    print(f"{len(runs)} runs in {elapsed:.1f} s; {len(queued)} queued a job; fired by pid: {fired_by}")
