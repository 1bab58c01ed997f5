"""The database restarts under running jobs: a PostgreSQL cluster of the test's own (never the machine's shared
server) is stopped (fast shutdown: transactions rolled back, connections cut) while two workers are each in the
middle of a job, stays down a few seconds, and comes back. The workers ride it out in place: heartbeats and
accept steps fail and are retried, the leases (longer than the outage) hold, the same worker processes
reconnect and finish their jobs with exact counts and nothing stored twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.core.db import create_db_engine, make_session_factory, run_migrations
from app.generation.models import GenerationJob
from app.jobs.models import JobStatus
from tests.integration.drills.common import (
    check_dataset_kept,
    check_job,
    new_dataset,
    queue_generation,
    sim_metrics,
)
from tests.support.pg_cluster import PgCluster
from tests.support.sim_server import running_sim_server
from tests.support.workers import WorkerFleet, wait_until, worker_env

pytestmark = [pytest.mark.drill, pytest.mark.slow, pytest.mark.postgres]

COUNT = 40
LEASE_SECONDS = 20  # longer than the outage: the jobs stay with their workers
OUTAGE_SECONDS = 2.5


def test_workers_ride_out_a_database_restart_and_finish_their_jobs(
    pg_cluster: PgCluster, shared_data: Path, tmp_path: Path
) -> None:
    url = pg_cluster.url
    run_migrations(url)
    engine = create_db_engine(url)
    sessions = make_session_factory(engine)
    with running_sim_server(
        pool=str(shared_data / "bench_instructions.jsonl.gz"),
        pool_size=2000,
        mutate_rate=0.3,
        latency="lognormal",
        median=0.5,
        sigma=0.3,
        seed=31,
    ) as sim:
        backends = {"sim": sim.backend_settings(max_in_flight=2)}
        env = worker_env(
            url,
            backends=backends,
            default_backend="sim",
            dataset_max_running_jobs=2,
            job_lease_seconds=LEASE_SECONDS,
            worker_poll_seconds=0.2,
            worker_heartbeat_seconds=0.5,
        )
        dataset_id = new_dataset(sessions, "restart")
        with WorkerFleet(tmp_path / "workers", env) as fleet:
            workers = [fleet.start(concurrency=1) for _ in range(2)]
            for worker in workers:  # both up before the jobs come: each takes one, at the same time
                fleet.wait_registered(sessions, worker)
            job_ids = [
                queue_generation(sessions, backends, dataset_id, count=COUNT, max_prompts=400)
                for _ in range(2)
            ]

            def jobs() -> list[GenerationJob]:
                with sessions() as session:
                    found = list(session.scalars(select(GenerationJob).where(GenerationJob.id.in_(job_ids))))
                    session.expunge_all()
                    return found

            # Both jobs mid-way (a batch stored, more to come), both workers with requests in flight.
            def mid_batch() -> bool:
                now = jobs()
                assert all(j.status in (JobStatus.queued, JobStatus.running) for j in now), [
                    (j.id, j.status, j.error) for j in now
                ]
                return (
                    all(j.status == JobStatus.running and 0 < j.accepted < COUNT // 2 for j in now)
                    and sim_metrics(sim.metrics_url)["vllm:num_requests_running"] > 0
                )

            wait_until(
                mid_batch,
                timeout=60,
                what="both jobs mid-way with requests in flight",
                diagnostics=fleet.diagnostics,
            )
            engine.dispose()  # the test's own connections go with the server too
            before = {j.id: (j.accepted, j.worker_id, j.attempt) for j in jobs()}
            assert len({worker for _, worker, _ in before.values()}) == 2  # one job on each worker
            stopped_at = time.monotonic()
            pg_cluster.stop()
            in_flight_during = sim_metrics(sim.metrics_url)["vllm:num_requests_running"]
            time.sleep(OUTAGE_SECONDS)  # the outage itself, not a wait for a result
            pg_cluster.start()
            outage = time.monotonic() - stopped_at

            wait_until(
                lambda: all(JobStatus(j.status).is_final for j in jobs()),
                timeout=120,
                poll=0.2,
                what="both jobs to end after the restart",
                diagnostics=lambda: fleet.diagnostics() + "\n--- cluster log ---\n" + pg_cluster.log_tail(),
            )
            took = time.monotonic() - stopped_at
            assert all(w.alive() for w in workers), fleet.diagnostics()  # the same processes, reconnected
            after = {j.id: j.accepted for j in jobs()}
            # The outage hit them: each worker logged failed database calls while the server was down.
            failures = {
                w.name: [
                    r["message"][:120]
                    for r in w.records()
                    if r.get("level") in ("WARNING", "ERROR") and "released" not in r.get("message", "")
                ]
                for w in workers
            }
            codes = fleet.stop_all(workers)
        assert codes == [0, 0], fleet.diagnostics()
        checks = [check_job(sessions, job_id, COUNT) for job_id in job_ids]
        check_dataset_kept(sessions, dataset_id)
    engine.dispose()
    assert all(failures.values()), failures
    assert [c.attempt for c in checks] == [1, 1], checks  # no lease ran out: the jobs never changed hands
    assert all(after[j] > before[j][0] for j in job_ids)  # work went on after the restart
    print(
        f"\nrestart: down {outage:.1f} s with {in_flight_during:.0f} sequence(s) in flight; accepted before "
        f"{ {j: b[0] for j, b in before.items()} }, after {after}; done {took:.1f} s after the stop; "
        f"failed calls logged per worker { {k: len(v) for k, v in failures.items()} }"
    )
