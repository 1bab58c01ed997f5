"""The fleet's workers as rows: each registers when it starts, writes a heartbeat in database time, and marks
itself stopped when it stops. A worker whose heartbeat is older than a few intervals is dead (killed, its
machine gone); its jobs come back through their expired leases, not through this table."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app import __version__
from app.core.db import utc_now, utcnow
from app.jobs.models import WorkerProcess

# Rows of workers that stopped (or died) longer ago than this are removed when another worker registers.
FORGET_AFTER = timedelta(days=1)


def register(session: Session, worker_id: str, kind: str) -> None:
    session.execute(delete(WorkerProcess).where(WorkerProcess.heartbeat_at < utcnow() - FORGET_AFTER))
    session.add(
        WorkerProcess(
            id=worker_id,
            kind=kind,
            hostname=socket.gethostname()[:255],
            pid=os.getpid(),
            version=__version__,
            started_at=utc_now(),
            heartbeat_at=utc_now(),
        )
    )


def heartbeat(session: Session, worker_id: str, *, running: int, claimed: int) -> None:
    # Never over a stop: a heartbeat still in flight when its worker stops must not make it look alive again.
    session.execute(
        update(WorkerProcess)
        .where(WorkerProcess.id == worker_id, WorkerProcess.stopped_at.is_(None))
        .values(heartbeat_at=utc_now(), running=running, claimed=claimed)
    )


def mark_stopped(session: Session, worker_id: str) -> None:
    session.execute(
        update(WorkerProcess).where(WorkerProcess.id == worker_id).values(stopped_at=utc_now(), running=0)
    )


def list_workers(session: Session) -> list[WorkerProcess]:
    return list(session.scalars(select(WorkerProcess).order_by(WorkerProcess.started_at.desc())))
