"""Crash safety of generation: a `sprout worker` SIGKILLed in the middle of a job (a batch half-accepted,
requests in flight at the model server) loses nothing and stores nothing twice. A second worker takes the job
over once the dead worker's lease expires and finishes it from what was stored. SQLite (a file) and
PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.core.db import create_db_engine, make_session_factory, run_migrations
from app.jobs.models import JobStatus
from tests.integration.drills.common import (
    TASKS_PER_PROMPT,
    caught_across_attempts,
    check_dataset_kept,
    check_job,
    job_row,
    new_dataset,
    queue_generation,
    replies_of,
    sim_metrics,
)
from tests.support.sim_server import running_sim_server
from tests.support.workers import WorkerFleet, alive, wait_until, worker_env

pytestmark = [pytest.mark.drill, pytest.mark.slow]

COUNT = 20
LEASE_SECONDS = 3


def test_a_worker_killed_mid_batch_loses_nothing_and_stores_nothing_twice(
    database_url: str, tmp_path: Path
) -> None:
    run_migrations(database_url)
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    # The built-in pool: 60 short tasks (26 of them distinct from each other and the seeds at ROUGE-L 0.7), a
    # third with a word swapped or replaced. Whatever was accepted before the kill keeps coming back after it.
    with running_sim_server(mutate_rate=0.3, latency="lognormal", median=0.6, sigma=0.3, seed=11) as sim:
        backends = {"sim": sim.backend_settings(max_in_flight=2)}
        env = worker_env(
            database_url,
            backends=backends,
            default_backend="sim",
            job_lease_seconds=LEASE_SECONDS,
            worker_poll_seconds=0.2,
            worker_heartbeat_seconds=0.5,
        )
        dataset_id = new_dataset(sessions, "crash")
        with WorkerFleet(tmp_path / "workers", env) as fleet:
            first = fleet.start()
            fleet.wait_registered(sessions, first)
            job_id = queue_generation(sessions, backends, dataset_id, count=COUNT, max_prompts=400)

            # Live work: a batch accepted but not the last one, and requests being answered right now.
            def mid_job() -> bool:
                job = job_row(sessions, job_id)
                if job.status != JobStatus.running:
                    assert job.status == JobStatus.queued, (job.status, job.error)
                    return False
                return (
                    0 < job.accepted <= COUNT - TASKS_PER_PROMPT
                    and sim_metrics(sim.metrics_url)["vllm:num_requests_running"] > 0
                )

            wait_until(
                mid_job,
                timeout=60,
                what="the job to be mid-way with requests in flight",
                diagnostics=fleet.diagnostics,
            )
            aborted_before = sim_metrics(sim.metrics_url).get("sim:requests_aborted_total", 0.0)
            children = first.kill()
            killed_at = time.monotonic()

            # The kill cut requests the sim server was still answering, and left the job half done and held.
            wait_until(
                lambda: sim_metrics(sim.metrics_url).get("sim:requests_aborted_total", 0.0) > aborted_before,
                timeout=10,
                what="the sim server to see the killed worker's requests cut off",
            )
            at_kill = job_row(sessions, job_id)
            assert at_kill.status == JobStatus.running and at_kill.attempt == 1
            assert 0 < at_kill.accepted < COUNT and replies_of(sessions, job_id) == at_kill.requests
            # Its children (the index process) do not outlive it.
            wait_until(
                lambda: not any(alive(pid) for pid in children),
                timeout=10,
                what=f"the killed worker's children {children} to exit",
            )

            second = fleet.start()
            wait_until(
                lambda: job_row(sessions, job_id).status not in (JobStatus.running, JobStatus.queued),
                timeout=90,
                what="the job to finish on the second worker",
                diagnostics=fleet.diagnostics,
            )
            took_over = time.monotonic() - killed_at
            assert second.alive(), fleet.diagnostics()

        result = check_job(sessions, job_id, COUNT)
        kept = check_dataset_kept(sessions, dataset_id)
        caught = caught_across_attempts(sessions, job_id)
    engine.dispose()
    assert result.attempt == 2, result  # claimed once more after the lease expired, and only once
    # The first attempt's replies were kept, and the second resumed from them.
    assert set(result.replies_by_attempt) == {1, 2}, result
    assert result.replies_by_attempt[1] == at_kill.requests
    assert kept.by_job[job_id] == result.accepted
    # Near-duplicates of items kept before the kill did come back after it, and were caught.
    assert caught > 0, result
    print(
        f"\n[{database_url.split(':')[0]}] killed at accepted={at_kill.accepted}/{COUNT} "
        f"(requests {at_kill.requests}); finished accepted={result.accepted} requests={result.requests} "
        f"attempt={result.attempt}, replies by attempt {result.replies_by_attempt}, {took_over:.1f} s after the kill; "
        f"{caught} near-duplicate(s) of pre-kill items caught after it"
    )
