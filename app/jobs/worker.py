"""The worker: claims queued generation and fine-tuning jobs from the database and runs them, fires due schedules,
and writes its heartbeat. It runs inside `sprout serve` (the embedded default) or as its own process
(`sprout worker`, app/cli/worker.py), any number of them on any number of machines against one database.

The database is the queue, so a job queued by the API, the CLI, a schedule or another process is picked up the
same way, and a job whose worker died is put back by its expired lease. Generation jobs are claimed by
priority, then age, at most `dataset_max_running_jobs` per dataset at once. Fine-tuning jobs take two kinds of
slot: the check of their files (cheap, as many as generation slots) and training (`finetune_concurrency`, one
by default: a training uses every core).
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

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import SchemaTooNewError, check_schema, transaction
from app.finetune.auto import feed_all
from app.finetune.models import FineTuneJob
from app.finetune.runner import FinetuneRunner
from app.generation.models import GenerationJob
from app.generation.pipeline.runner import GenerationRunner
from app.jobs import workers
from app.jobs.models import LeasedJob
from app.jobs.queue import Claim, claim_next, requeue_expired
from app.llm.registry import BackendRegistry
from app.ops import metrics
from app.ops.logs import bind
from app.schedules.service import fire_due

log = logging.getLogger(__name__)

# How often a running worker looks at the schema's revision: a newer Sprout may have migrated the database.
SCHEMA_CHECK_SECONDS = 60.0
# The longest wait between two polls while the database is away.
MAX_OUTAGE_WAIT = 10.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        registry: BackendRegistry,
        *,
        kind: str = "service",
        database_url: str | None = None,
    ) -> None:
        """`kind` is what the fleet sees ("service": inside `sprout serve`, "worker": its own process);
        `database_url` lets it watch the schema's revision (a newer Sprout's migration stops it)."""
        self._sessions = sessions
        self._settings = settings
        self._runner = GenerationRunner(sessions, settings, registry)
        self._finetune = FinetuneRunner(sessions, settings, registry)
        self._registry = registry
        self.kind = kind
        self.worker_id = new_worker_id()
        self._database_url = database_url
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_auto_feed = 0.0
        self._next_heartbeat = 0.0
        self._next_schedules = 0.0
        self._next_schema_check = time.monotonic() + SCHEMA_CHECK_SECONDS
        self._registered = False
        self._claimed = 0
        self._validations: set[asyncio.Task[None]] = set()
        self._trainings: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self.stopped = asyncio.Event()  # set when the loop ended by itself (a newer schema)
        self.refusal: str | None = None

    @property
    def running(self) -> int:
        return len(self._tasks) + len(self._validations) + len(self._trainings)

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
        if self._registered:
            try:
                await asyncio.to_thread(self._write, workers.mark_stopped, self.worker_id)
            except Exception:  # noqa: BLE001 (the row's heartbeat goes stale instead)
                log.warning("could not mark worker %s stopped", self.worker_id, exc_info=True)

    async def _loop(self) -> None:
        bind(worker_id=self.worker_id)  # every line this worker and its jobs log carries it
        outage = (
            0.0  # seconds to wait while the database is away: a line per outage step, not a traceback a poll
        )
        while True:
            try:
                await self._housekeeping()
                if self.refusal is not None:
                    self.stopped.set()
                    return
                await self._fill_slots()
                if outage:
                    log.info("worker %s: the database is back", self.worker_id)
                outage = 0.0
            except (OperationalError, InterfaceError) as exc:
                outage = min(max(outage * 2, self._settings.worker_poll_seconds), MAX_OUTAGE_WAIT)
                log.warning(
                    "worker %s: database unavailable (%s); next try in %.1f s",
                    self.worker_id,
                    exc.orig,
                    outage,
                )
            except Exception:  # noqa: BLE001 (a bug must not stop the worker; the next poll tries again)
                log.exception("worker could not claim jobs")
            try:
                wait = outage or self._settings.worker_poll_seconds
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _housekeeping(self) -> None:
        """Registration and heartbeat, the schema watch, due schedules: each at its own pace."""
        now = time.monotonic()
        if not self._registered:
            await asyncio.to_thread(self._write, workers.register, self.worker_id, self.kind)
            self._registered = True
            log.info("worker %s registered (%s)", self.worker_id, self.kind)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self._settings.worker_heartbeat_seconds
            await asyncio.to_thread(
                self._write, workers.heartbeat, self.worker_id, running=self.running, claimed=self._claimed
            )
            metrics.mark_heartbeat(self.worker_id)
        if self._database_url is not None and now >= self._next_schema_check:
            self._next_schema_check = now + SCHEMA_CHECK_SECONDS
            try:
                await asyncio.to_thread(check_schema, self._database_url, allow_behind=True)
            except SchemaTooNewError as exc:
                self.refusal = str(exc)
                log.error("worker %s stops: %s", self.worker_id, exc)
                return
        if self._settings.schedules_enabled and now >= self._next_schedules:
            self._next_schedules = now + self._settings.schedule_poll_seconds
            queued = await asyncio.to_thread(
                fire_due, self._sessions, self._settings, self._registry, self.worker_id
            )
            if queued:
                log.info("schedules queued generation jobs %s", ", ".join(map(str, queued)))

    def _write(self, step: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        with transaction(self._sessions) as session:
            step(session, *args, **kwargs)

    async def _fill_slots(self) -> None:
        await asyncio.to_thread(self._requeue_expired)
        while len(self._tasks) < self._settings.worker_concurrency:
            claim = await asyncio.to_thread(
                self._claim, GenerationJob, (), self._settings.dataset_max_running_jobs
            )
            if claim is None:
                break
            metrics.JOBS_CLAIMED.labels("generation").inc()
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
                metrics.JOBS_CLAIMED.labels("fine_tune").inc()
                task = asyncio.create_task(
                    self._run_finetune(run, claim), name=f"fine-tune-job-{claim.job_id}"
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    async def _run_finetune(self, run: Callable[[Claim], Awaitable[None]], claim: Claim) -> None:
        bind(job_id=claim.job_id, job_kind="fine_tune")
        await run(claim)
        metrics.JOBS_FINISHED.labels("fine_tune", "ended").inc()
        self._wake.set()  # a validated job waits for a training slot: look again now

    async def _run(self, claim: Claim) -> None:
        status = await self._runner.run(claim)
        outcome = status.value if status else "handed_over"
        metrics.JOBS_FINISHED.labels("generation", outcome).inc()
        log.info("generation job %s finished: %s", claim.job_id, outcome)
        self._wake.set()

    def _claim(
        self, model: type[LeasedJob], where: Sequence[Any] = (), per_dataset_limit: int | None = None
    ) -> Claim | None:
        with transaction(self._sessions) as session:
            claim = claim_next(
                session,
                model,
                self.worker_id,
                self._settings.job_lease_seconds,
                where=where,
                per_dataset_limit=per_dataset_limit,
            )
        if claim is not None:
            self._claimed += 1
        return claim

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
