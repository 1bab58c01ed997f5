"""The durable job queue, in the database: claim, lease, fence, finish, requeue, cancel.

Sprout keeps its own queue because the embedded default runs on SQLite (procrastinate is PostgreSQL-only,
APScheduler 4 is a pre-release). Every state change is one conditional UPDATE, so two workers, or a worker and
a cancelling user, can never both win:
- claim:   queued -> running, attempt + 1, lease_until = database time + lease.
- fence:   every write of a runner carries WHERE id, worker_id, attempt, status = running, lease not expired.
  A runner whose lease lapsed (its process stalled, the job was requeued and claimed again) writes nothing.
- release: a stopping worker hands its job back (queued again, or cancelled if a cancel was asked for).
- requeue: running jobs whose lease expired go back to the queue, or fail once they used their attempts.
- cancel:  queued -> cancelled at once; running -> cancel_requested (the runner stops and finishes it).
Times come from the database's clock (`utc_now`), so machines with skewed clocks agree on who holds a lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from app.core.db import utc_now, utcnow
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


def claim_next(
    session: Session,
    model: type[LeasedJob],
    worker_id: str,
    lease_seconds: float,
    *,
    job_id: int | None = None,
    where: Sequence[Any] = (),
) -> Claim | None:
    """Take the oldest queued job (or the given one) that also meets `where`; None when there is none."""
    query = select(model.id).where(model.status == JobStatus.queued, *where)  # type: ignore[attr-defined]
    if job_id is not None:
        query = query.where(model.id == job_id)  # type: ignore[attr-defined]
    for candidate in session.scalars(query.order_by(model.id).limit(8)):  # type: ignore[attr-defined]
        attempt = session.scalar(
            update(model)
            .execution_options(synchronize_session=False)
            .where(model.id == candidate, model.status == JobStatus.queued)  # type: ignore[attr-defined]
            .values(
                status=JobStatus.running,
                worker_id=worker_id,
                lease_until=utc_now(lease_seconds),
                started_at=utcnow(),
                attempt=model.attempt + 1,
            )
            .returning(model.attempt)
        )
        if attempt is not None:
            return Claim(candidate, worker_id, attempt)
    return None


def renew(session: Session, model: type[LeasedJob], claim: Claim, lease_seconds: float) -> bool:
    """Extend the lease; returns whether a cancel was requested. LeaseLostError when it is no longer ours."""
    cancel_requested = session.scalar(
        update(model)
        .execution_options(synchronize_session=False)
        .where(*fence(model, claim))
        .values(lease_until=utc_now(lease_seconds))
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
