"""The in-process worker: claims queued generation and fine-tuning jobs from the database and runs them.

The database is the queue, so a job queued by the API, the CLI or another process is picked up the same way,
and a job whose worker died is put back by its expired lease. Fine-tuning jobs take two kinds of slot: the
check of their files (cheap, as many as generation slots) and training (`finetune_concurrency`, one by default:
a training uses every core). [6/8] adds worker processes and schedules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import transaction
from app.finetune.auto import feed_all
from app.finetune.models import FineTuneJob
from app.finetune.runner import FinetuneRunner
from app.generation.models import GenerationJob
from app.generation.pipeline.runner import GenerationRunner
from app.jobs.models import LeasedJob
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
        self._finetune = FinetuneRunner(sessions, settings, registry)
        self.worker_id = new_worker_id()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_auto_feed = 0.0
        self._validations: set[asyncio.Task[None]] = set()
        self._trainings: set[asyncio.Task[None]] = set()
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
        tasks = [self._loop_task, *self._tasks, *self._validations, *self._trainings]
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)

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
                break
            task = asyncio.create_task(self._run(claim), name=f"generation-job-{claim.job_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await self._fill_finetune_slots()

    async def _fill_finetune_slots(self) -> None:
        if time.monotonic() >= self._next_auto_feed:
            self._next_auto_feed = time.monotonic() + self._settings.finetune_auto_seconds
            queued = await asyncio.to_thread(feed_all, self._sessions, self._settings)
            if queued:
                log.info("auto-feed queued fine-tuning jobs %s", ", ".join(queued))
        slots = (
            (self._validations, self._settings.worker_concurrency, False, self._finetune.validate),
            (self._trainings, self._settings.finetune_concurrency, True, self._finetune.train),
        )
        for tasks, limit, validated, run in slots:
            while len(tasks) < limit:
                claim = await asyncio.to_thread(self._claim_finetune, validated)
                if claim is None:
                    break
                task = asyncio.create_task(
                    self._run_finetune(run, claim), name=f"fine-tune-job-{claim.job_id}"
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    async def _run_finetune(self, run: Callable[[Claim], Awaitable[None]], claim: Claim) -> None:
        await run(claim)
        self._wake.set()  # a validated job waits for a training slot: look again now

    async def _run(self, claim: Claim) -> None:
        status = await self._runner.run(claim)
        log.info("generation job %s finished: %s", claim.job_id, status.value if status else "handed over")
        self._wake.set()

    def _claim(self, model: type[LeasedJob] = GenerationJob, where: Sequence[Any] = ()) -> Claim | None:
        with transaction(self._sessions) as session:
            return claim_next(session, model, self.worker_id, self._settings.job_lease_seconds, where=where)

    def _claim_finetune(self, validated: bool) -> Claim | None:
        return self._claim(FineTuneJob, [FineTuneJob.files_validated.is_(validated)])

    def _requeue_expired(self) -> None:
        """Both kinds of job, in one transaction."""
        with transaction(self._sessions) as session:
            released = {
                model.__tablename__: requeue_expired(session, model, self._settings.job_max_attempts)
                for model in (GenerationJob, FineTuneJob)
            }
        for table, counts in released.items():
            if any(counts.values()):
                log.warning("released %s rows whose worker stopped: %s", table, counts)
