"""The job queue on SQLite and on a real PostgreSQL server: one claim per job, fenced writes, database time,
attempts, and cancel against claim."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import update

from app.core.config import Settings
from app.core.db import transaction
from app.core.errors import ConflictError
from app.datasets.seed_formats import SeedInstance, SeedTaskIn
from app.datasets.service import create_dataset, import_seeds
from app.generation.models import GenerationJob
from app.generation.params import GenerationParams
from app.generation.service import queue_job
from app.jobs.models import JobStatus
from app.jobs.queue import (
    Claim,
    LeaseLostError,
    claim_next,
    fenced_update,
    finish,
    renew,
    request_cancel,
    requeue_expired,
)
from app.llm.registry import BackendRegistry

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
REGISTRY = BackendRegistry.from_settings(SETTINGS)
SEEDS = [SeedTaskIn(instruction="翻译成英文：你好", instances=(SeedInstance("", "Hello"),))]


def queue(sessions, n: int = 1) -> list[int]:  # noqa: ANN001
    with transaction(sessions) as session:
        dataset = create_dataset(session, f"d{id(object())}")
        import_seeds(session, dataset, SEEDS, source="test")
        return [
            queue_job(session, dataset.id, GenerationParams(count=3), SETTINGS, REGISTRY).id for _ in range(n)
        ]


def claim(sessions, worker: str, lease: float = 60.0, job_id: int | None = None) -> Claim | None:  # noqa: ANN001
    with transaction(sessions) as session:
        return claim_next(session, GenerationJob, worker, lease, job_id=job_id)


def test_a_job_is_claimed_once_and_its_lease_renews_only_for_its_holder(sessions) -> None:
    (job_id,) = queue(sessions)
    first = claim(sessions, "worker-a")
    assert first == Claim(job_id, "worker-a", 1)
    assert claim(sessions, "worker-b") is None
    with transaction(sessions) as session:
        assert renew(session, GenerationJob, first, 60) is False  # renewed, no cancel asked
    impostor = Claim(job_id, "worker-b", 1)
    with pytest.raises(LeaseLostError), transaction(sessions) as session:
        renew(session, GenerationJob, impostor, 60)


def test_a_lapsed_lease_fences_every_write_of_the_old_holder(sessions) -> None:
    (job_id,) = queue(sessions)
    old = claim(sessions, "stalled", lease=-1.0)  # already expired by the database's clock
    assert old is not None
    with pytest.raises(LeaseLostError), transaction(sessions) as session:
        fenced_update(session, GenerationJob, old, accepted=1)  # expired: refused even before a requeue
    with transaction(sessions) as session:
        assert requeue_expired(session, GenerationJob, max_attempts=3) == {
            "cancelled": 0,
            "failed": 0,
            "requeued": 1,
        }
    new = claim(sessions, "fresh")
    assert new is not None and new.attempt == 2
    for write in (
        lambda s: fenced_update(s, GenerationJob, old, accepted=99),
        lambda s: renew(s, GenerationJob, old, 60),
        lambda s: finish(s, GenerationJob, old, JobStatus.succeeded),
    ):
        with pytest.raises(LeaseLostError), transaction(sessions) as session:
            write(session)
    with transaction(sessions) as session:
        fenced_update(session, GenerationJob, new, accepted=2, parsed=2, raw=2)
        finish(session, GenerationJob, new, JobStatus.succeeded)
    with sessions() as session:
        job = session.get(GenerationJob, job_id)
        assert (job.status, job.accepted, job.worker_id, job.lease_until) == (
            JobStatus.succeeded,
            2,
            None,
            None,
        )


def test_a_job_whose_workers_keep_dying_fails_after_its_attempts(sessions) -> None:
    (job_id,) = queue(sessions)
    for attempt in (1, 2, 3):
        held = claim(sessions, f"doomed-{attempt}", lease=-1.0)
        assert held is not None and held.attempt == attempt
        with transaction(sessions) as session:
            released = requeue_expired(session, GenerationJob, max_attempts=3)
    assert released == {"cancelled": 0, "failed": 1, "requeued": 0}
    with sessions() as session:
        job = session.get(GenerationJob, job_id)
        assert job.status == JobStatus.failed and "3 time(s)" in job.error


def test_cancel_rules(sessions) -> None:
    queued, running = queue(sessions, 2)
    held = claim(sessions, "w", job_id=running)
    with transaction(sessions) as session:
        assert request_cancel(session, GenerationJob, queued) == JobStatus.cancelled
        assert request_cancel(session, GenerationJob, running) == JobStatus.running  # asked, not yet stopped
    with transaction(sessions) as session:
        assert renew(session, GenerationJob, held, 60) is True  # the runner learns of it at its next write
        finish(session, GenerationJob, held, JobStatus.cancelled)
    with pytest.raises(ConflictError, match="already cancelled"), transaction(sessions) as session:
        request_cancel(session, GenerationJob, queued)
    # A running job whose worker died after a cancel was asked for ends cancelled, not requeued.
    (orphan,) = queue(sessions)
    claim(sessions, "dies", lease=-1.0, job_id=orphan)
    with transaction(sessions) as session:
        session.execute(update(GenerationJob).where(GenerationJob.id == orphan).values(cancel_requested=True))
    with transaction(sessions) as session:
        assert requeue_expired(session, GenerationJob, max_attempts=3)["cancelled"] == 1


def test_cancel_and_claim_racing_never_both_win(sessions) -> None:
    """Many rounds of one thread cancelling while another claims the same queued job: each job ends either
    cancelled and unclaimed, or claimed (running) with its cancel requested: never running unasked-for."""
    jobs = queue(sessions, 30)

    def race(job_id: int) -> tuple[object, object]:
        barrier = threading.Barrier(2)
        results: dict[str, object] = {}

        def do_claim() -> None:
            barrier.wait()
            results["claim"] = claim(sessions, "racer", job_id=job_id)

        def do_cancel() -> None:
            barrier.wait()
            with transaction(sessions) as session:
                results["cancel"] = request_cancel(session, GenerationJob, job_id)

        threads = [threading.Thread(target=do_claim), threading.Thread(target=do_cancel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results["claim"], results["cancel"]

    outcomes = {job_id: race(job_id) for job_id in jobs}
    with sessions() as session:
        for job_id, (claimed, cancel) in outcomes.items():
            job = session.get(GenerationJob, job_id)
            if claimed is None:
                assert (
                    cancel == JobStatus.cancelled and job.status == JobStatus.cancelled and job.attempt == 0
                )
            else:
                assert (
                    cancel == JobStatus.running and job.status == JobStatus.running and job.cancel_requested
                )
