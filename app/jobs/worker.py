"""The in-process worker: claims queued generation jobs from the database and runs them.

The database is the queue, so a job queued by the API, the CLI or another process is picked up the same way,
and a job whose worker died is put back by its expired lease. [6/8] adds worker processes and schedules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import transaction
from app.generation.models import GenerationJob
from app.generation.pipeline.runner import GenerationRunner
from app.jobs.queue import Claim, claim_next, requeue_expired
from app.llm.registry import BackendRegistry

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self, sessions: sessionmaker[Session], settings: Settings, registry: BackendRegistry
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._runner = GenerationRunner(sessions, settings, registry)
        self.worker_id = new_worker_id()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self._loop_task = asyncio.create_task(self._loop(), name="sprout-worker")

    def notify(self) -> None:
        """A job was queued: look now instead of at the next poll. Safe from any thread (routes that are plain
        functions run in a thread pool; an asyncio.Event may only be set from its own loop)."""
        if self._event_loop is not None:
            self._event_loop.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        """Stop claiming; running jobs go back to the queue at once (their runners release them)."""
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
            claim = await asyncio.to_thread(self._claim)
            if claim is None:
                return
            task = asyncio.create_task(self._run(claim), name=f"generation-job-{claim.job_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, claim: Claim) -> None:
        status = await self._runner.run(claim)
        log.info("generation job %s finished: %s", claim.job_id, status.value if status else "handed over")
        self._wake.set()

    def _claim(self) -> Claim | None:
        with transaction(self._sessions) as session:
            return claim_next(session, GenerationJob, self.worker_id, self._settings.job_lease_seconds)

    def _requeue_expired(self) -> None:
        with transaction(self._sessions) as session:
            released = requeue_expired(session, GenerationJob, self._settings.job_max_attempts)
        if any(released.values()):
            log.warning("released generation jobs whose worker stopped: %s", released)
