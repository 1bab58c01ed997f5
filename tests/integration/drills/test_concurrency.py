"""Four `sprout worker` processes against one PostgreSQL, eight jobs into one dataset, a model server whose answers
are full of near-duplicates (of each other, and of what other jobs accepted). Every job is claimed once, by one
worker, and done once; the per-dataset running limit holds at every moment; and no two items the dataset kept
are near-duplicates by the project's exact ROUGE-L, although the jobs ran in four processes at once."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from app.core.db import create_db_engine, make_session_factory, run_migrations
from app.generation.models import GenerationJob, Item
from app.jobs.models import JobStatus, WorkerProcess
from tests.integration.drills.common import check_dataset_kept, check_job, new_dataset, queue_generation
from tests.support.databases import fresh_postgres_database
from tests.support.sim_server import running_sim_server
from tests.support.workers import WorkerFleet, wait_until, worker_env

pytestmark = [pytest.mark.drill, pytest.mark.slow, pytest.mark.postgres]

WORKERS = 4
JOBS = 8
COUNT = 15
RUNNING_LIMIT = 2  # settings.dataset_max_running_jobs


@pytest.fixture
def database_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


class RunningSampler:
    """Samples the running jobs every few milliseconds in a thread of its own: the most at once, and which
    workers each job was seen with."""

    def __init__(self, sessions, dataset_id: int) -> None:  # noqa: ANN001
        self._sessions = sessions
        self._dataset_id = dataset_id
        self.most = 0
        self.samples = 0
        self.holders: dict[int, set[tuple[str, int]]] = defaultdict(set)  # job -> {(worker, attempt)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="running-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._sessions() as session:
                rows = session.execute(
                    select(GenerationJob.id, GenerationJob.worker_id, GenerationJob.attempt).where(
                        GenerationJob.dataset_id == self._dataset_id,
                        GenerationJob.status == JobStatus.running,
                    )
                ).all()
            self.samples += 1
            self.most = max(self.most, len(rows))
            for row in rows:
                self.holders[row.id].add((row.worker_id, row.attempt))
            self._stop.wait(0.02)

    def __enter__(self) -> RunningSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_four_workers_one_dataset_every_job_once_and_no_near_duplicates(
    database_url: str, shared_data: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    run_migrations(database_url)
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    with running_sim_server(
        pool=str(shared_data / "bench_instructions.jsonl.gz"),
        pool_size=2000,  # ~300 distinct tasks for 120 items: later jobs keep meeting what others accepted
        mutate_rate=0.5,  # and half the tasks come with a word swapped or replaced (ROUGE-L near-duplicates)
        latency="lognormal",
        median=0.3,
        sigma=0.4,
        seed=23,
    ) as sim:
        backends = {"sim": sim.backend_settings(max_in_flight=4)}
        env = worker_env(
            database_url,
            backends=backends,
            default_backend="sim",
            dataset_max_running_jobs=RUNNING_LIMIT,
            job_lease_seconds=10,
            worker_poll_seconds=0.1,
            worker_heartbeat_seconds=0.5,
        )
        dataset_id = new_dataset(sessions, "fleet")
        with WorkerFleet(tmp_path / "workers", env) as fleet, RunningSampler(sessions, dataset_id) as sampler:
            # One job at a time per worker: two jobs running at once are then two processes at once.
            workers = [fleet.start(concurrency=1) for _ in range(WORKERS)]
            launched = time.monotonic()
            for worker in workers:
                fleet.wait_registered(sessions, worker)
            registered = time.monotonic()
            # Queued once every worker is up, so all four compete for them from the first claim.
            job_ids = [
                queue_generation(sessions, backends, dataset_id, count=COUNT, max_prompts=400)
                for _ in range(JOBS)
            ]

            def all_final() -> bool:
                with sessions() as session:
                    statuses = session.scalars(
                        select(GenerationJob.status).where(GenerationJob.id.in_(job_ids))
                    )
                    return all(JobStatus(s).is_final for s in statuses)

            wait_until(
                all_final, timeout=180, poll=0.2, what="all jobs to end", diagnostics=fleet.diagnostics
            )
            ended = time.monotonic()
            codes = fleet.stop_all(workers)
            stopped = time.monotonic()
        assert codes == [0] * WORKERS, fleet.diagnostics()

        checks = [check_job(sessions, job_id, COUNT) for job_id in job_ids]
        kept = check_dataset_kept(sessions, dataset_id)
        with sessions() as session:
            fleet_rows = session.execute(select(WorkerProcess.pid, WorkerProcess.claimed)).all()
            # Near-duplicates caught across jobs: an item filtered against an item another job had kept.
            other = aliased(Item)
            across = session.scalar(
                select(func.count())
                .select_from(Item)
                .join(other, other.id == Item.nearest_id)
                .where(
                    Item.dataset_id == dataset_id,
                    Item.filter_reason == "near_duplicate",
                    Item.nearest_kind == "item",
                    other.job_id != Item.job_id,
                )
            )
    engine.dispose()

    # Every job done exactly once: one claim, by one worker, never held by two.
    assert [c.attempt for c in checks] == [1] * JOBS, checks
    assert all(len(sampler.holders[j]) == 1 for j in job_ids), dict(sampler.holders)
    finished = Counter(
        r["job_id"]
        for w in workers
        for r in w.records()
        if r.get("message", "").startswith(f"generation job {r.get('job_id')} finished")
    )
    assert finished == dict.fromkeys(job_ids, 1), finished
    assert sorted(row.pid for row in fleet_rows) == sorted(w.pid for w in workers)
    assert sum(row.claimed for row in fleet_rows) == JOBS, fleet_rows  # no claim beyond one per job
    # The per-dataset limit held, and was reached (the drill did press against it): with one job per worker,
    # that is two processes working on the dataset at once.
    assert sampler.most == RUNNING_LIMIT, (sampler.most, sampler.samples)
    assert len({holder for j in job_ids for holder, _ in sampler.holders[j]}) >= RUNNING_LIMIT
    # Dedup was exercised across jobs and processes, and still kept no near-duplicate pair.
    assert across and across > 0
    assert sum(kept.by_job.values()) == sum(c.accepted for c in checks) == len(kept.instructions)
    print(
        f"\n{JOBS} jobs x {COUNT} on {WORKERS} workers: accepted {[c.accepted for c in checks]}, "
        f"requests {sum(c.requests for c in checks)}, kept {len(kept.instructions)} items with no pair over "
        f"ROUGE-L 0.7, {across} duplicates caught across jobs; most running at once {sampler.most} "
        f"({sampler.samples} samples); jobs per worker "
        f"{json.dumps(Counter(h for j in job_ids for h, _ in sampler.holders[j]))}; setup {launched - started:.1f} s, "
        f"workers up {registered - launched:.1f} s, jobs {ended - registered:.1f} s, stop {stopped - ended:.1f} s"
    )
