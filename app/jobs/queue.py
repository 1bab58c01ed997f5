"""The durable job queue, in the database: claim, lease, fence, finish, requeue, cancel.

Sprout keeps its own queue because the embedded default runs on SQLite (procrastinate is PostgreSQL-only,
APScheduler 4 is a pre-release). Every state change is one conditional UPDATE, so two workers, or a worker and
a cancelling user, can never both win:
- claim:   queued -> running, attempt + 1, lease_until = database time + lease; highest priority first, then the
  oldest; a job waiting out a retry backoff (not_before) is skipped, and so is one whose dataset already has as
  many running jobs as its limit allows.
- fence:   every write of a runner carries WHERE id, worker_id, attempt, status = running, lease not expired.
  A runner whose lease lapsed (its process stalled, the job was requeued and claimed again) writes nothing.
- release: a stopping worker hands its job back (queued again, or cancelled if a cancel was asked for).
- retry:   a job that met a transient failure (its model server down, its database gone) goes back to the queue
  with a growing backoff, until it used its attempts.
- requeue: running jobs whose lease expired go back to the queue, or fail once they used their attempts.
- cancel:  queued -> cancelled at once; running -> cancel_requested (the runner stops and finishes it).
Times come from the database's clock (`utc_now`), so machines with skewed clocks agree on who holds a lease.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, literal, or_, select, update
from sqlalchemy.orm import Session, aliased
from tenacity import RetryCallState, wait_random_exponential

from app.core.db import try_serialize, utc_now, utcnow
from app.core.errors import ConflictError, NotFoundError
from app.core.text import storable
from app.jobs.models import JobStatus, LeasedJob


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker holds after claiming a job: the fencing token of its writes."""

    job_id: int
    worker_id: str
    attempt: int


class LeaseLostError(Exception):
    """This worker no longer holds the job: another worker may own it now. Stop and write nothing."""

    def __init__(self, claim: Claim) -> None:
        super().__init__(f"job {claim.job_id}: lease of {claim.worker_id} (attempt {claim.attempt}) lost")
        self.claim = claim


def fence(model: type[LeasedJob], claim: Claim) -> list[Any]:
    """WHERE conditions that hold only while `claim` is still the job's current, unexpired lease."""
    return [
        model.id == claim.job_id,  # type: ignore[attr-defined]
        model.worker_id == claim.worker_id,
        model.attempt == claim.attempt,
        model.status == JobStatus.running,
        model.lease_until > utc_now(),
    ]


# Advisory-lock namespace of per-dataset claim decisions ("SPDC").
DATASET_CLAIM_LOCK = 0x5350_4443
# Looks a claim takes when other claimers held its candidate's dataset lock, or filled that dataset first.
CLAIM_ROUNDS = 5


@functools.cache
def _other(model: type[LeasedJob]) -> Any:
    """The job table under a second name, for subqueries about its other rows (made once: building an ORM alias
    costs more than the rest of a claim)."""
    return aliased(model)


def claim_next(
    session: Session,
    model: type[LeasedJob],
    worker_id: str,
    lease_seconds: float,
    *,
    job_id: int | None = None,
    where: Sequence[Any] = (),
    per_dataset_limit: int | None = None,
) -> Claim | None:
    """Take the next queued job (or the given one) that also meets `where`: highest priority first, then the
    oldest, skipping jobs still waiting out a retry backoff. With `per_dataset_limit`, a job whose dataset
    already has that many running jobs of this kind is left for later (and does not hold up other datasets'
    jobs behind it). None when nothing can be claimed."""
    dataset = getattr(model, "dataset_id", None)
    limited = per_dataset_limit is not None and dataset is not None
    ready = or_(model.not_before.is_(None), model.not_before <= utc_now())
    query = select(model.id, dataset if dataset is not None else literal(None)).where(
        model.status == JobStatus.queued, ready, *where
    )
    if job_id is not None:
        query = query.where(model.id == job_id)  # type: ignore[attr-defined]
    if limited:  # datasets at their limit now (a hint from this snapshot; the claim itself checks again)
        other = _other(model)
        full = (
            select(other.dataset_id)  # type: ignore[attr-defined]
            .where(other.status == JobStatus.running, other.dataset_id.is_not(None))  # type: ignore[attr-defined]
            .group_by(other.dataset_id)  # type: ignore[attr-defined]
            .having(func.count() >= per_dataset_limit)
        )
        query = query.where(or_(dataset.is_(None), dataset.not_in(full)))
    # One candidate, locked with SKIP LOCKED (PostgreSQL; SQLite's write transaction is exclusive anyway), so
    # concurrent claimers each take a different job instead of queueing on the oldest one's row.
    query = (
        query.order_by(model.priority.desc(), model.id)  # type: ignore[attr-defined]
        .limit(1)
        .with_for_update(skip_locked=True, of=model)
    )
    for round_ in range(CLAIM_ROUNDS):
        row = session.execute(query).first()
        if row is None:
            return None
        candidate, dataset_id = row
        conditions = [model.id == candidate, model.status == JobStatus.queued]  # type: ignore[attr-defined]
        if limited and dataset_id is not None:
            # Two claimers must not both see the dataset one job short of its limit: the decision is taken under a
            # per-dataset lock (PostgreSQL; SQLite's write transaction is one already), and the count is read by
            # the UPDATE itself, a statement that starts after the lock was granted (READ COMMITTED: it sees every
            # claim committed before). A busy lock means another claimer is deciding for this dataset right now:
            # its transaction is a few statements long, so look again in a moment rather than wait on the lock.
            if not try_serialize(session, DATASET_CLAIM_LOCK, dataset_id):
                time.sleep(0.005 * (round_ + 1))
                continue
            other = _other(model)
            running = (
                select(func.count())
                .where(other.dataset_id == dataset_id, other.status == JobStatus.running)  # type: ignore[attr-defined]
                .scalar_subquery()
            )
            conditions.append(running < per_dataset_limit)
        attempt = session.scalar(
            update(model)
            .execution_options(synchronize_session=False)
            .where(*conditions)
            .values(
                status=JobStatus.running,
                worker_id=worker_id,
                lease_until=utc_now(lease_seconds),
                started_at=utcnow(),
                attempt=model.attempt + 1,
                not_before=None,
            )
            .returning(model.attempt)
        )
        if attempt is not None:
            return Claim(candidate, worker_id, attempt)
        # Its dataset filled up since the candidates were read: the next look leaves that dataset out.
    return None


def renew(
    session: Session, model: type[LeasedJob], claim: Claim, lease_seconds: float, **values: Any
) -> bool:
    """Extend the lease (writing `values` with it); returns whether a cancel was requested. LeaseLostError when
    it is no longer ours."""
    cancel_requested = session.scalar(
        update(model)
        .execution_options(synchronize_session=False)
        .where(*fence(model, claim))
        .values(lease_until=utc_now(lease_seconds), **values)
        .returning(model.cancel_requested)
    )
    if cancel_requested is None:
        raise LeaseLostError(claim)
    return bool(cancel_requested)


def fenced_update(session: Session, model: type[LeasedJob], claim: Claim, **values: Any) -> bool:
    """Write `values` to the job if `claim` still holds it; returns whether a cancel was requested."""
    cancel_requested = session.scalar(
        update(model)
        .execution_options(synchronize_session=False)
        .where(*fence(model, claim))
        .values(**values)
        .returning(model.cancel_requested)
    )
    if cancel_requested is None:
        raise LeaseLostError(claim)
    return bool(cancel_requested)


def finish(
    session: Session,
    model: type[LeasedJob],
    claim: Claim,
    status: JobStatus,
    *,
    message: str | None = None,
    error: str | None = None,
    **values: Any,
) -> None:
    """Move a claimed job to a final status (LeaseLostError if the claim lapsed: then someone else finishes it)."""
    if not status.is_final:
        raise ValueError(f"{status} is not a final status")
    fenced_update(
        session,
        model,
        claim,
        status=status,
        message=storable(message) if message is not None else None,
        error=storable(error) if error is not None else None,  # server text (a 404 body) may hold a NUL
        finished_at=utcnow(),
        lease_until=None,
        worker_id=None,
        **values,
    )


def release(session: Session, model: type[LeasedJob], claim: Claim) -> None:
    """A stopping worker hands its job back at once: queued again, or cancelled if a cancel was asked for
    (LeaseLostError if the claim lapsed already). The attempt it used stays counted, like any claim."""
    fenced_update(
        session,
        model,
        claim,
        status=case((model.cancel_requested.is_(True), JobStatus.cancelled), else_=JobStatus.queued),
        message=case(
            (model.cancel_requested.is_(True), "cancelled (its worker stopped first)"), else_=model.message
        ),
        finished_at=case((model.cancel_requested.is_(True), utcnow()), else_=None),
        worker_id=None,
        lease_until=None,
    )


def retry_delay(attempt: int, *, initial: float = 5.0, maximum: float = 300.0) -> float:
    """Seconds a job waits before its next attempt after a transient failure: jittered exponential backoff
    (tenacity's), so many jobs failed by one outage do not all come back at the same instant."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return float(wait_random_exponential(multiplier=initial, max=maximum)(state))


def retry_later(
    session: Session,
    model: type[LeasedJob],
    claim: Claim,
    *,
    reason: str,
    max_attempts: int,
    initial: float = 5.0,
    maximum: float = 300.0,
    **failed_values: Any,
) -> JobStatus:
    """A transient failure (its model server unreachable, its database gone): back to the queue, claimable again
    after a backoff that grows with the attempt, or failed once it used `max_attempts` claims. Its stored work
    stays: the next attempt resumes from it. `failed_values` are written too if it fails. Returns the status
    the job is left in."""
    if claim.attempt >= max_attempts:
        finish(
            session,
            model,
            claim,
            JobStatus.failed,
            error=f"failed after {claim.attempt} attempt(s); last: {reason}",
            **failed_values,
        )
        return JobStatus.failed
    delay = retry_delay(claim.attempt, initial=initial, maximum=maximum)
    fenced_update(
        session,
        model,
        claim,
        status=case((model.cancel_requested.is_(True), JobStatus.cancelled), else_=JobStatus.queued),
        message=storable(
            f"attempt {claim.attempt} of {max_attempts} failed ({reason}); retrying in {delay:.0f} s"
        ),
        finished_at=case((model.cancel_requested.is_(True), utcnow()), else_=None),
        not_before=utc_now(delay),
        worker_id=None,
        lease_until=None,
    )
    return JobStatus.queued


def requeue_expired(session: Session, model: type[LeasedJob], max_attempts: int) -> dict[str, int]:
    """Running jobs whose worker stopped renewing (a crash, a kill, a network split) are released: cancelled if a
    cancel was asked for, failed once they used `max_attempts` claims, queued again otherwise. They resume from
    what they stored; the lapsed worker's later writes are fenced off."""
    expired = [model.status == JobStatus.running, model.lease_until < utc_now()]
    released = {"cancelled": 0, "failed": 0, "requeued": 0}
    done = {"finished_at": utcnow(), "lease_until": None, "worker_id": None}
    released["cancelled"] = _count(
        session.execute(
            update(model)
            .execution_options(synchronize_session=False)
            .where(*expired, model.cancel_requested.is_(True))
            .values(status=JobStatus.cancelled, message="cancelled (its worker stopped first)", **done)
        )
    )
    released["failed"] = _count(
        session.execute(
            update(model)
            .execution_options(synchronize_session=False)
            .where(*expired, model.attempt >= max_attempts)
            .values(
                status=JobStatus.failed,
                error=f"its worker stopped {max_attempts} time(s) (lease expired each time); giving up",
                **done,
            )
        )
    )
    released["requeued"] = _count(
        session.execute(
            update(model)
            .execution_options(synchronize_session=False)
            .where(*expired)
            .values(status=JobStatus.queued, worker_id=None, lease_until=None)
        )
    )
    return released


def request_cancel(session: Session, model: type[LeasedJob], job_id: int) -> JobStatus:
    """Cancel a job: a queued one at once, a running one by asking its runner (ConflictError once it is final)."""
    cancelled = session.execute(
        update(model)
        .execution_options(synchronize_session=False)
        .where(model.id == job_id, model.status == JobStatus.queued)  # type: ignore[attr-defined]
        .values(
            status=JobStatus.cancelled,
            cancel_requested=True,
            finished_at=utcnow(),
            message="cancelled before it started",
        )
    )
    if _count(cancelled):
        return JobStatus.cancelled
    asked = session.execute(
        update(model)
        .execution_options(synchronize_session=False)
        .where(model.id == job_id, model.status == JobStatus.running)  # type: ignore[attr-defined]
        .values(cancel_requested=True)
    )
    if _count(asked):
        return JobStatus.running
    status = session.scalar(select(model.status).where(model.id == job_id))  # type: ignore[attr-defined]
    if status is None:
        raise NotFoundError(f"job {job_id} not found")
    raise ConflictError(f"job {job_id} is already {JobStatus(status).value}")


def _count(result: Any) -> int:
    return int(result.rowcount or 0)
