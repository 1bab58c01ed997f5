"""The in-process worker: claims queued generation jobs from the database and runs them.

The database is the queue, so a job queued by the API, the CLI or another process is picked up the same way, and
a job whose worker died is put back by its expired lease. [6/7] grows this into many workers with cron schedules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.generation.backends import BackendPool
from app.generation.jobs import claim_next_job, requeue_expired_jobs
from app.generation.pipeline import LEASE, GenerationRunner

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self, session_factory: sessionmaker[Session], settings: Settings, backends: BackendPool
    ) -> None:
        self._sessions = session_factory
        self._settings = settings
        self._runner = GenerationRunner(session_factory, settings, backends)
        self.worker_id = new_worker_id()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="sprout-worker")

    def notify(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        for task in [self._loop_task, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in [self._loop_task, *self._tasks] if t is not None), return_exceptions=True
        )

    async def _loop(self) -> None:
        while True:
            try:
                await self._fill_slots()
            except Exception:  # noqa: BLE001 (the database may be briefly unavailable; try again)
                log.exception("worker could not claim jobs")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.worker_poll_seconds)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _fill_slots(self) -> None:
        await asyncio.to_thread(self._requeue_expired)
        while len(self._tasks) < self._settings.worker_concurrency:
            job_id = await asyncio.to_thread(self._claim)
            if job_id is None:
                return
            task = asyncio.create_task(self._run(job_id), name=f"generation-job-{job_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job_id: int) -> None:
        status = await self._runner.run(job_id, worker_id=self.worker_id)
        log.info("generation job %s finished: %s", job_id, status.value)
        self._wake.set()

    def _claim(self) -> int | None:
        with transaction(self._sessions) as session:
            return claim_next_job(session, self.worker_id, LEASE)

    def _requeue_expired(self) -> None:
        with transaction(self._sessions) as session:
            n = requeue_expired_jobs(session)
        if n:
            log.warning("requeued %d generation job(s) whose worker stopped", n)
