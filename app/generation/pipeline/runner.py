"""Run one claimed generation job: keep the model server saturated, screen each reply as it lands, accept in order.

Three tasks share a job:
- the producer keeps up to N sequences in flight (N = the backend's `max_in_flight`): it starts request r as
  soon as a slot frees, parses and filters each answer as it arrives, and queues it for the accept step;
- the accept loop takes whatever is queued and stores it in one transaction (see accept.py); while it works,
  new answers queue up (a bounded number: backpressure), so the commit cadence follows the load;
- the heartbeat renews the lease and notices a cancel.
The job ends when its count is accepted, its prompt budget is spent, it is cancelled, its errors exceed their
budget, an error no retry can fix arrives, or its lease is lost. The error budget counts per attempt: when it
is spent by a model server that stayed unreachable through each request's retries (every replica down, a
restart), the failure is transient and ends this attempt only: the job goes back to the queue with a backoff
and resumes from what it stored, until it has used its attempts. Requests still in flight are then cancelled
(an abandoned request costs nothing more). The event loop only awaits: screening, deduplication and every
database call run in worker threads.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import openai
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import transaction
from app.datasets.models import SeedTask
from app.datasets.service import all_seeds
from app.finetune.serving import AdapterLoadError, ensure_loaded
from app.generation.candidates import TaskExample
from app.generation.filters import FilterConfig
from app.generation.models import GenerationJob, GenerationReply
from app.generation.params import ResolvedParams, resolve_params
from app.generation.pipeline.accept import AcceptStep, Counters, Thresholds
from app.generation.pipeline.requests import LLMRequest, RequestSpec, build_request, request_numbers
from app.generation.pipeline.screening import ScreenedReply, failed_reply, screen_reply
from app.generation.templates import PromptTemplates, load_templates
from app.jobs.models import JobStatus
from app.jobs.queue import Claim, LeaseLostError, fenced_update, finish, release, renew, retry_later
from app.llm import BackendRegistry, LLMBackend, LLMError, LLMFatalError, UnknownBackendError
from app.llm.base import LLMUnavailableError, Reply
from app.ops.logs import bind

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, object]], None]
MAX_REPLIES_PER_ACCEPT = 512
# Candidates per accept transaction: enough to amortise a commit, few enough that the write lock (on SQLite,
# the whole database's) is never held for long, so heartbeats and the API's writes wait milliseconds, not seconds.
MAX_CANDIDATES_PER_ACCEPT = 400
# Requests that saw a tuned model's 404 within this many seconds of its reload just resend.
ADAPTER_RELOAD_WINDOW = 10.0


class Ending(enum.Enum):
    done = "done"
    budget = "budget"
    cancelled = "cancelled"
    fatal = "fatal"
    errors = "errors"
    unavailable = "unavailable"  # errors past the budget, the last one an unreachable server: retry later
    lease_lost = "lease_lost"


@dataclass(slots=True)
class JobContext:
    job_id: int
    dataset_id: int
    backend: str
    seed: int
    params: ResolvedParams
    examples: list[TaskExample]
    templates: dict[str, PromptTemplates]
    done_requests: frozenset[int]
    counters: Counters


class GenerationRunner:
    def __init__(
        self, sessions: sessionmaker[Session], settings: Settings, registry: BackendRegistry
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._registry = registry

    async def run(self, claim: Claim, *, on_progress: ProgressCallback | None = None) -> JobStatus | None:
        """Run a claimed job to its end; its final status, or None when the lease was lost (someone else owns
        it now) or the run was cancelled by a stopping worker (the job went back to the queue)."""
        bind(job_id=claim.job_id, job_kind="generation")  # this task's log lines carry them (app/ops/logs.py)
        busy = _BusyClock()
        try:
            try:
                ctx = await asyncio.to_thread(self._load, claim)
                bind(dataset_id=ctx.dataset_id)
                log.info(
                    "generation job %s: attempt %d on backend %s (%d of %d accepted so far)",
                    claim.job_id,
                    claim.attempt,
                    ctx.backend,
                    ctx.counters.accepted,
                    ctx.params.count,
                )
                backend = await self._registry.get(ctx.backend)
                if ctx.params.model:  # a tuned model: the server forgets adapters when it restarts
                    await ensure_loaded(
                        self._sessions, self._settings.backends, ctx.backend, ctx.params.model
                    )
            except (
                UnknownBackendError,
                LLMFatalError,
                AdapterLoadError,
                openai.APIError,
                ValueError,
                OSError,
            ) as exc:  # e.g. a template file gone
                return await self._finish(claim, JobStatus.failed, error=str(exc))
            run = _JobRun(self, claim, ctx, backend, on_progress, busy)
            return await run.execute()
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self._release, claim, busy.take()))
            raise
        except LeaseLostError:
            return None
        except Exception as exc:  # noqa: BLE001 (a job must never stay "running" because of a bug)
            log.exception("generation job %s crashed", claim.job_id)
            return await self._finish(
                claim, JobStatus.failed, error=f"internal error: {type(exc).__name__}: {exc}"
            )

    # --- database steps (run in worker threads) -------------------------------------------------------------

    def _load(self, claim: Claim) -> JobContext:
        with self._sessions() as session:
            job = session.get(GenerationJob, claim.job_id)
            if job is None:
                raise ValueError(f"generation job {claim.job_id} vanished")
            params = resolve_params(job.params, self._settings, self._registry.settings_of(job.backend))
            seeds = all_seeds(session, job.dataset_id)
            done = frozenset(
                session.scalars(select(GenerationReply.request_no).where(GenerationReply.job_id == job.id))
            )
            languages = ("en", "zh") if params.language == "auto" else (params.language,)
            templates = {
                lang: load_templates(self._settings.prompts_dir, params.mode, lang) for lang in languages
            }
            ctx = JobContext(
                job_id=job.id,
                dataset_id=job.dataset_id,
                backend=job.backend,
                seed=job.seed,
                params=params,
                examples=[example_of(s) for s in seeds],
                templates=templates,
                done_requests=done,
                counters=Counters.of(job),
            )
        if not ctx.examples:
            raise ValueError("the dataset has no seed tasks: import seeds before generating")
        return ctx

    def _release(self, claim: Claim, busy_seconds: float = 0.0) -> None:
        """A stopping worker hands its job back to the queue at once instead of letting the lease run out."""
        try:
            with transaction(self._sessions) as session:
                fenced_update(
                    session, GenerationJob, claim, busy_seconds=GenerationJob.busy_seconds + busy_seconds
                )
                release(session, GenerationJob, claim)
        except LeaseLostError:
            pass
        except Exception:  # noqa: BLE001 (the lease will expire and the job be requeued anyway)
            log.warning("could not release generation job %s", claim.job_id, exc_info=True)

    async def _finish(
        self,
        claim: Claim,
        status: JobStatus,
        *,
        message: str | None = None,
        error: str | None = None,
        busy_seconds: float = 0.0,
    ) -> JobStatus | None:
        def write() -> None:
            with transaction(self._sessions) as session:
                finish(
                    session,
                    GenerationJob,
                    claim,
                    status,
                    message=message,
                    error=error,
                    busy_seconds=GenerationJob.busy_seconds + busy_seconds,
                )

        try:
            await asyncio.to_thread(write)
        except LeaseLostError:
            return None
        return status

    async def _retry_later(self, claim: Claim, reason: str, busy_seconds: float) -> JobStatus | None:
        """A transient failure: back to the queue with a backoff (or failed once out of attempts)."""

        def write() -> JobStatus:
            with transaction(self._sessions) as session:
                fenced_update(
                    session, GenerationJob, claim, busy_seconds=GenerationJob.busy_seconds + busy_seconds
                )
                settings = self._settings
                return retry_later(
                    session,
                    GenerationJob,
                    claim,
                    reason=reason,
                    max_attempts=settings.job_max_attempts,
                    initial=settings.job_retry_initial_seconds,
                    maximum=settings.job_retry_max_seconds,
                )

        try:
            status = await asyncio.to_thread(write)
        except LeaseLostError:
            return None
        log.warning("generation job %s: %s; left %s", claim.job_id, reason, status.value)
        return status if status.is_final else None

    def renew(self, claim: Claim, busy_seconds: float = 0.0) -> bool:
        with transaction(self._sessions) as session:
            return renew(
                session,
                GenerationJob,
                claim,
                self._settings.job_lease_seconds,
                busy_seconds=GenerationJob.busy_seconds + busy_seconds,
            )


class _JobRun:
    """The state of one run of one job (see the module docstring for how its three tasks share the work)."""

    def __init__(
        self,
        runner: GenerationRunner,
        claim: Claim,
        ctx: JobContext,
        backend: LLMBackend,
        on_progress: ProgressCallback | None,
        busy: _BusyClock,
    ) -> None:
        self._runner = runner
        self._busy = busy
        self._claim = claim
        self._ctx = ctx
        self._backend = backend
        self._on_progress = on_progress
        params = ctx.params
        self._spec = RequestSpec.of(params)
        self._filters = FilterConfig()
        self._accept = AcceptStep(
            runner._sessions,
            claim,
            dataset_id=ctx.dataset_id,
            count=params.count,
            counters=ctx.counters,
            thresholds=Thresholds(params.rouge_threshold, params.fuzzy_cutoff),
            model=params.model or backend.info.model,
        )
        # Request slots: N sequences in flight, each request being prompts x n of them.
        slots = max(1, backend.info.max_in_flight // self._spec.sequences_per_request)
        self._in_flight = asyncio.Semaphore(slots)
        # Answered but not yet accepted: bounded, so a slow accept step slows the producer (backpressure).
        self._pending = asyncio.Semaphore(2 * slots + MAX_REPLIES_PER_ACCEPT // 4)
        self._queue: asyncio.Queue[ScreenedReply] = asyncio.Queue()
        self._ended = asyncio.Event()
        self._producer_done = asyncio.Event()
        self._ending: Ending | None = None
        self._reason: str | None = None
        self._prompts_started = ctx.counters.prompts
        self._errors = 0  # the error budget is per attempt: a retried job gets it afresh
        self._adapter_lock = asyncio.Lock()
        self._adapter_loaded_at = -ADAPTER_RELOAD_WINDOW

    # --- the end ------------------------------------------------------------------------------------------

    def _end(self, ending: Ending, reason: str | None = None) -> None:
        if self._ending is None:
            self._ending, self._reason = ending, reason
            self._ended.set()

    async def execute(self) -> JobStatus | None:
        counters = self._accept.counters
        if counters.accepted >= self._ctx.params.count:  # resumed after its last batch, before finishing
            return await self._runner._finish(
                self._claim, JobStatus.succeeded, busy_seconds=self._busy.take()
            )
        # The heartbeat starts first: building a large dataset's index can take longer than a lease.
        heartbeat = asyncio.create_task(self._heartbeat(), name=f"job-{self._claim.job_id}-heartbeat")
        producer: asyncio.Task[None] | None = None
        try:
            await asyncio.to_thread(self._accept.load)
            if self._ending is None:  # a cancel may have come, or the lease gone, while the index was built
                producer = asyncio.create_task(self._produce(), name=f"job-{self._claim.job_id}-producer")
                await self._accept_loop()
        finally:
            self._end(Ending.lease_lost)  # no-op when an ending is already set; stops the producer otherwise
            heartbeat.cancel()
            await asyncio.gather(*(t for t in (producer, heartbeat) if t is not None), return_exceptions=True)
            await asyncio.shield(asyncio.to_thread(self._accept.close))
        return await self._conclude()

    async def _conclude(self) -> JobStatus | None:
        params, counters = self._ctx.params, self._accept.counters
        ending = self._ending
        busy = self._busy.take()
        if ending is Ending.lease_lost:
            log.warning("generation job %s: lease lost; another worker owns it now", self._claim.job_id)
            return None
        if ending is Ending.unavailable:
            return await self._runner._retry_later(
                self._claim, self._reason or "model server unreachable", busy
            )
        if ending is Ending.done:
            return await self._runner._finish(self._claim, JobStatus.succeeded, busy_seconds=busy)
        if ending is Ending.budget:
            message = (
                f"prompt budget of {params.max_prompts} used up: accepted {counters.accepted} of {params.count} "
                "(raise max_prompts or use a stronger model)"
            )
            return await self._runner._finish(
                self._claim, JobStatus.succeeded, message=message, busy_seconds=busy
            )
        if ending is Ending.cancelled:
            return await self._runner._finish(
                self._claim,
                JobStatus.cancelled,
                message="cancelled while running; the items already accepted are kept",
                busy_seconds=busy,
            )
        return await self._runner._finish(
            self._claim, JobStatus.failed, error=self._reason, busy_seconds=busy
        )

    # --- producer -----------------------------------------------------------------------------------------

    async def _produce(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        ended = asyncio.create_task(self._ended.wait())
        try:
            for number in request_numbers(self._ctx.done_requests):
                if self._ending is not None:
                    break
                request = build_request(
                    self._spec,
                    self._ctx.templates,
                    self._ctx.examples,
                    job_seed=self._ctx.seed,
                    number=number,
                )
                if self._prompts_started + request.prompt_count > self._ctx.params.max_prompts:
                    break
                if not await self._acquire(self._pending, ended):
                    break
                if not await self._acquire(self._in_flight, ended):
                    self._pending.release()
                    break
                self._prompts_started += request.prompt_count
                task = asyncio.create_task(
                    self._request(request), name=f"job-{self._claim.job_id}-request-{number}"
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks and self._ending is None:  # budget spent: let the last answers arrive
                await asyncio.wait([*tasks, ended], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()  # the count is reached, the job cancelled or lost: nobody waits for these
            await asyncio.gather(*tasks, return_exceptions=True)
            ended.cancel()
            self._producer_done.set()

    @staticmethod
    async def _acquire(semaphore: asyncio.Semaphore, ended: asyncio.Task[bool]) -> bool:
        """Take a slot, or give up when the job ends first."""
        if ended.done():
            return False
        acquire = asyncio.create_task(semaphore.acquire())
        await asyncio.wait([acquire, ended], return_when=asyncio.FIRST_COMPLETED)
        if acquire.done() and not acquire.cancelled():
            if ended.done():
                semaphore.release()
                return False
            return True
        acquire.cancel()
        try:
            await acquire
        except asyncio.CancelledError:
            return False
        semaphore.release()  # it was granted while being cancelled
        return False

    async def _request(self, request: LLMRequest) -> None:
        started = time.perf_counter()
        queued = False
        try:
            try:
                try:
                    reply = await self._send(request)
                except LLMFatalError as exc:
                    if not await self._adapter_reloaded(exc):
                        raise
                    reply = await self._send(request)  # the tuned model is back on its server
            except LLMFatalError as exc:
                self._end(Ending.fatal, str(exc))
                return
            except LLMError as exc:
                screened = failed_reply(request, str(exc), latency_ms=_ms_since(started))
                self._count_error(screened.error, transient=isinstance(exc, LLMUnavailableError))
            else:
                settings = self._runner._settings
                screened = await asyncio.to_thread(
                    screen_reply,
                    request,
                    reply,
                    self._filters,
                    log_chars=settings.reply_log_chars,
                    latency_ms=_ms_since(started),
                )
                if screened.error is not None:
                    self._count_error(screened.error)
            self._queue.put_nowait(screened)
            queued = True
        finally:
            self._in_flight.release()
            if not queued:
                self._pending.release()

    async def _send(self, request: LLMRequest) -> Reply:
        if request.mode == "completions":
            return await self._backend.complete(request.prompts, request.sampling)
        return await self._backend.chat(request.messages, request.sampling, json_schema=request.json_schema)

    async def _adapter_reloaded(self, error: LLMFatalError) -> bool:
        """A 404 for a tuned model mid-job: its server (a replica) restarted and forgot the adapter. Load it again
        (once for all the requests that saw the 404 together) and let them resend; False when it is not that
        case or the adapter cannot be loaded (the 404 then fails the job, as it would have)."""
        model = self._ctx.params.model
        if model is None or "HTTP 404" not in str(error):
            return False
        async with self._adapter_lock:
            if time.monotonic() - self._adapter_loaded_at < ADAPTER_RELOAD_WINDOW:
                return True  # a request that failed alongside this one has just loaded it
            runner = self._runner
            try:
                await ensure_loaded(runner._sessions, runner._settings.backends, self._ctx.backend, model)
            except Exception:  # noqa: BLE001 (not loadable: the job fails with the 404 itself)
                log.warning(
                    "generation job %s: could not load %s again", self._claim.job_id, model, exc_info=True
                )
                return False
            self._adapter_loaded_at = time.monotonic()
            log.warning(
                "generation job %s: %s was gone from its server; loaded it again", self._claim.job_id, model
            )
            return True

    def _count_error(self, error: str | None, *, transient: bool = False) -> None:
        """Failed requests are stored like any reply; past the budget (of this attempt) the job stops sending
        new ones: for good, or to be retried later when the last failure was an unreachable server."""
        self._errors += 1
        if self._errors > self._ctx.params.max_errors:
            self._end(
                Ending.unavailable if transient else Ending.errors,
                f"{self._errors} requests failed (more than the error budget of {self._ctx.params.max_errors}); "
                f"last error: {error}",
            )

    # --- accept loop --------------------------------------------------------------------------------------

    async def _next_batch(self) -> list[ScreenedReply] | None:
        """Everything queued now, once at least one reply is; None when the producer is done and all is in."""
        if self._queue.empty():
            first = await self._wait_for_reply()
            if first is None:
                return None
            batch = [first]
        else:
            batch = [self._queue.get_nowait()]
        candidates = len(batch[0].candidates)
        while (
            not self._queue.empty()
            and len(batch) < MAX_REPLIES_PER_ACCEPT
            and candidates < MAX_CANDIDATES_PER_ACCEPT
        ):
            batch.append(self._queue.get_nowait())
            candidates += len(batch[-1].candidates)
        return batch

    async def _wait_for_reply(self) -> ScreenedReply | None:
        while self._queue.empty():
            if self._producer_done.is_set():
                return None
            get = asyncio.create_task(self._queue.get())
            producer_done = asyncio.create_task(self._producer_done.wait())
            await asyncio.wait([get, producer_done], return_when=asyncio.FIRST_COMPLETED)
            producer_done.cancel()
            if get.done():
                return get.result()
            get.cancel()  # a cancelled get() leaves its item in the queue
            await asyncio.gather(get, return_exceptions=True)
        return self._queue.get_nowait()

    async def _accept_loop(self) -> None:
        count = self._ctx.params.count
        while True:
            batch = await self._next_batch()
            if batch is None:
                if self._ending is None:
                    self._end(Ending.budget)
                return
            if self._ending in (Ending.lease_lost, Ending.done):
                return
            try:
                outcome = await self._accept_with_retries(batch)
            finally:
                for _ in batch:
                    self._pending.release()
            if outcome is None:  # the lease was lost
                self._end(Ending.lease_lost)
                return
            counters = outcome.counters
            if self._on_progress is not None:
                self._on_progress(counters.as_dict())
            if counters.accepted >= count:
                self._end(Ending.done)
                return
            if outcome.cancel_requested:
                self._end(Ending.cancelled)

    async def _accept_with_retries(self, batch: list[ScreenedReply]):  # noqa: ANN202 (AcceptOutcome | None)
        """Accept a batch; a database that went away is waited for (the batch is kept) while the lease holds."""
        delay = 0.5
        while True:
            try:
                return await asyncio.to_thread(self._accept.accept, batch)
            except LeaseLostError:
                return None
            except DBAPIError as exc:
                if not (exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)):
                    raise  # a constraint or a bug, not an outage: retrying would fail the same way
                if self._ending is Ending.lease_lost:
                    return None
                log.warning(
                    "generation job %s: accept step failed (%s); retrying in %.1f s",
                    self._claim.job_id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # --- heartbeat ----------------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        interval = self._runner._settings.job_lease_seconds / 4
        while self._ending is None:
            await asyncio.sleep(interval)
            try:
                cancel_requested = await asyncio.to_thread(self._runner.renew, self._claim, self._busy.take())
            except LeaseLostError:
                self._end(Ending.lease_lost)
                return
            except Exception:  # noqa: BLE001 (the database may be briefly away; the lease has room for it)
                log.warning("generation job %s: could not renew the lease", self._claim.job_id, exc_info=True)
                continue
            if cancel_requested:
                self._end(Ending.cancelled)


class _BusyClock:
    """Seconds of running time not yet added to the job's `busy_seconds` (each heartbeat and the end add them,
    so a killed worker loses at most one heartbeat's worth)."""

    def __init__(self) -> None:
        self._mark = time.monotonic()

    def take(self) -> float:
        now = time.monotonic()
        elapsed, self._mark = now - self._mark, now
        return elapsed


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def example_of(seed: SeedTask) -> TaskExample:
    instance = (seed.instances or [{}])[0]
    return TaskExample(
        instruction=seed.instruction,
        input=str(instance.get("input", "")),
        output=str(instance.get("output", "")),
        is_classification=seed.is_classification,
    )
