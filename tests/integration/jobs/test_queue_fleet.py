"""The queue as a fleet uses it, on SQLite and on a real PostgreSQL: priorities, the per-dataset running limit
under concurrent claimers, retry with backoff, and the workers' registry."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select, update

from app.core.config import Settings
from app.core.db import transaction, utc_now
from app.datasets.seed_formats import SeedInstance, SeedTaskIn
from app.datasets.service import create_dataset, import_seeds
from app.generation.models import GenerationJob
from app.generation.params import GenerationParams
from app.generation.service import queue_job
from app.jobs import workers
from app.jobs.models import JobStatus
from app.jobs.queue import claim_next, retry_delay, retry_later
from app.llm.registry import BackendRegistry

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
REGISTRY = BackendRegistry.from_settings(SETTINGS)
SEEDS = [SeedTaskIn(instruction="翻译成英文：你好", instances=(SeedInstance("", "Hello"),))]


def dataset_with_jobs(sessions, n: int, priorities: list[int] | None = None) -> list[int]:  # noqa: ANN001
    with transaction(sessions) as session:
        dataset = create_dataset(session, f"d{time.monotonic_ns()}")
        import_seeds(session, dataset, SEEDS, source="test")
        ids = []
        for i in range(n):
            job = queue_job(session, dataset.id, GenerationParams(count=3), SETTINGS, REGISTRY)
            job.priority = (priorities or [0] * n)[i]
            ids.append(job.id)
        return ids


def claim(sessions, worker: str, limit: int | None = None):  # noqa: ANN001, ANN201
    with transaction(sessions) as session:
        return claim_next(session, GenerationJob, worker, 60.0, per_dataset_limit=limit)


def test_higher_priority_first_then_the_oldest(sessions) -> None:
    low, high, high_later, normal = dataset_with_jobs(sessions, 4, priorities=[-5, 10, 10, 0])
    order = [claim(sessions, "w").job_id for _ in range(4)]
    assert order == [high, high_later, normal, low]


def test_a_dataset_never_runs_more_jobs_than_its_limit_even_with_concurrent_claimers(sessions) -> None:
    first = dataset_with_jobs(sessions, 6)
    second = dataset_with_jobs(sessions, 2)
    claims: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def claimer(n: int) -> None:
        barrier.wait()
        got = claim(sessions, f"w{n}", limit=2)
        if got is not None:
            with lock:
                claims.append(got.job_id)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([j for j in claims if j in first]) == 2  # at the limit, and not past it
    assert sorted(j for j in claims if j in second) == second  # another dataset's jobs are not held up
    with transaction(sessions) as session:
        running = session.scalar(
            select(GenerationJob.id)
            .where(GenerationJob.id.in_(first), GenerationJob.status == "queued")
            .limit(1)
        )
    assert running is not None  # the rest wait for a slot of their dataset
    assert claim(sessions, "late", limit=2) is None


def test_a_transient_failure_requeues_with_a_backoff_until_the_attempts_are_used(sessions) -> None:
    (job_id,) = dataset_with_jobs(sessions, 1)
    first = claim(sessions, "w")
    with transaction(sessions) as session:
        status = retry_later(
            session, GenerationJob, first, reason="server down", max_attempts=2, initial=30, maximum=60
        )
    assert status is JobStatus.queued
    with sessions() as session:
        job = session.get(GenerationJob, job_id)
        assert job.status is JobStatus.queued and job.worker_id is None and "server down" in job.message
        waits = session.scalar(select(GenerationJob.not_before > utc_now()).where(GenerationJob.id == job_id))
    assert waits  # it waits out its backoff...
    assert claim(sessions, "w") is None  # ...and nobody claims it before then
    with transaction(sessions) as session:  # the backoff has passed
        session.execute(
            update(GenerationJob).where(GenerationJob.id == job_id).values(not_before=utc_now(-1))
        )
    second = claim(sessions, "w2")
    assert second is not None and second.attempt == 2
    with transaction(sessions) as session:
        status = retry_later(session, GenerationJob, second, reason="server down", max_attempts=2)
    assert status is JobStatus.failed
    with sessions() as session:
        job = session.get(GenerationJob, job_id)
        assert (
            job.status is JobStatus.failed
            and "after 2 attempt(s)" in job.error
            and "server down" in job.error
        )


def test_a_cancel_asked_during_a_failed_attempt_is_honoured_instead_of_a_retry(sessions) -> None:
    (job_id,) = dataset_with_jobs(sessions, 1)
    held = claim(sessions, "w")
    with transaction(sessions) as session:
        session.execute(update(GenerationJob).where(GenerationJob.id == job_id).values(cancel_requested=True))
        retry_later(session, GenerationJob, held, reason="server down", max_attempts=3)
    with sessions() as session:
        assert session.get(GenerationJob, job_id).status is JobStatus.cancelled


def test_backoff_grows_with_the_attempt_and_is_capped() -> None:
    for attempt in range(1, 12):
        assert 0 <= retry_delay(attempt, initial=5, maximum=300) <= 300
    # jittered, so compare the largest of many draws
    assert max(retry_delay(1, initial=5, maximum=300) for _ in range(50)) <= 10
    assert max(retry_delay(6, initial=5, maximum=300) for _ in range(50)) > 10


def test_workers_register_beat_and_stop(sessions) -> None:
    with transaction(sessions) as session:
        workers.register(session, "host:1:abc", "worker")
    with transaction(sessions) as session:
        workers.heartbeat(session, "host:1:abc", running=2, claimed=5)
    with sessions() as session:
        (row,) = [w for w in workers.list_workers(session) if w.id == "host:1:abc"]
        assert (row.kind, row.running, row.claimed, row.stopped_at) == ("worker", 2, 5, None)
        assert row.heartbeat_at >= row.started_at
    with transaction(sessions) as session:
        workers.mark_stopped(session, "host:1:abc")
    with sessions() as session:
        (row,) = [w for w in workers.list_workers(session) if w.id == "host:1:abc"]
        assert row.stopped_at is not None and row.running == 0


def test_a_dataset_at_its_limit_does_not_hold_up_other_datasets_queued_behind_it(sessions) -> None:
    crowded = dataset_with_jobs(sessions, 12, priorities=[5] * 12)  # more than a claim looks at in one go
    later = dataset_with_jobs(sessions, 1)
    assert {claim(sessions, "w", limit=2).job_id for _ in range(2)} <= set(crowded)
    got = claim(sessions, "w", limit=2)
    assert got is not None and got.job_id == later[0]  # found past ten queued jobs of a full dataset
    assert claim(sessions, "w", limit=2) is None
