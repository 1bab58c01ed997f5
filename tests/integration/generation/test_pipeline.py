"""The generation pipeline's control flow on SQLite and on a real PostgreSQL server, with a scripted backend:
saturation, early stop, error budget, fatal errors, cancel, lost leases, resume, clean text.

The scripted backend is only the stand-in for what the model says; real models and real HTTP servers are
tested in test_generation_real.py, test_accept.py and tests/integration/llm/.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update

from app.core.config import Settings
from app.core.db import transaction
from app.datasets.models import SeedTask
from app.datasets.seed_formats import SeedInstance, SeedTaskIn
from app.datasets.service import create_dataset, import_seeds
from app.generation.models import GenerationJob, GenerationReply, Item, ItemStatus
from app.generation.params import GenerationParams, resolve_params
from app.generation.pipeline.accept import AcceptStep
from app.generation.pipeline.requests import RequestSpec, build_request
from app.generation.pipeline.runner import MAX_REPLIES_PER_ACCEPT, GenerationRunner, example_of
from app.generation.service import queue_job
from app.generation.templates import load_templates
from app.jobs.models import JobStatus
from app.jobs.queue import Claim, claim_next, request_cancel
from app.llm import LLMFatalError, LLMRequestError, LLMUnavailableError
from app.llm.registry import BackendRegistry
from tests.support.scripted_backend import ScriptedBackend

WORDS = [
    f"{a}{b}"
    for a in ("ka", "lo", "mi", "nu", "pe", "ri", "su", "to", "vi", "ze")
    for b in ("ban", "cor", "dal", "fin", "gor", "hul", "jet", "kim", "lus", "mor")
]
SEEDS = [
    SeedTaskIn(
        instruction=f"Describe the history of {WORDS[i]} in two sentences.",
        instances=(SeedInstance("", "It began."),),
    )
    for i in range(6)
]


def distinct_tasks(n: int = 5) -> Any:
    """A script whose every task is new: random words from a large vocabulary (no two are near-duplicates)."""
    rng = random.Random(7)

    def reply(_prompt: str) -> str:
        tasks = [
            {
                "instruction": "Explain " + " ".join(rng.sample(WORDS, 7)) + " carefully.",
                "input": "",
                "output": "Done.",
            }
            for _ in range(n)
        ]
        return json.dumps({"tasks": tasks})

    return reply


def setup_job(sessions, settings: Settings, registry: BackendRegistry, **params: Any) -> Claim:  # noqa: ANN001
    with transaction(sessions) as session:
        dataset = create_dataset(session, f"pipeline-{random.random()}")
        import_seeds(session, dataset, SEEDS, source="test")
        job_id = queue_job(session, dataset.id, GenerationParams(**params), settings, registry).id
    with transaction(sessions) as session:
        claim = claim_next(session, GenerationJob, "tester", settings.job_lease_seconds, job_id=job_id)
    assert claim is not None
    return claim


def make(database_url: str, backend: ScriptedBackend, **settings: Any) -> tuple[Settings, BackendRegistry]:
    s = Settings(_env_file=None, database_url=database_url, **settings)  # type: ignore[call-arg]
    return s, BackendRegistry(s.backends, factory=lambda name, _settings: backend)


def run(sessions, settings: Settings, registry: BackendRegistry, claim: Claim) -> JobStatus | None:  # noqa: ANN001
    async def go() -> JobStatus | None:
        try:
            return await GenerationRunner(sessions, settings, registry).run(claim)
        finally:
            await registry.aclose()

    return asyncio.run(go())


async def until(condition: Callable[[], bool], run_task: asyncio.Task[Any], timeout: float = 60.0) -> None:
    """Wait while the run goes on until `condition()` holds (a busy machine may take long to start a run)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert not run_task.done(), "the run ended first"
        assert time.monotonic() < deadline, f"not reached in {timeout:g} s"
        await asyncio.sleep(0.02)


def stored(sessions, job_id: int) -> tuple[GenerationJob, list[Item], list[GenerationReply]]:  # noqa: ANN001
    with sessions() as session:
        job = session.get(GenerationJob, job_id)
        items = list(session.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.id)))
        replies = list(session.scalars(select(GenerationReply).where(GenerationReply.job_id == job_id)))
        return job, items, replies


def assert_consistent(job: GenerationJob, items: list[Item], replies: list[GenerationReply]) -> None:
    """Counters, items and replies tell the same story."""
    assert job.parsed == len(items) == sum(r.parsed for r in replies)
    assert job.parsed == sum(job.filtered.values()) + job.duplicates + job.accepted
    assert (
        job.accepted
        == sum(1 for i in items if i.status == ItemStatus.pending)
        == sum(r.accepted for r in replies)
    )
    assert job.requests == len(replies) == len({r.request_no for r in replies})
    assert job.errors == sum(1 for r in replies if r.error is not None)
    assert job.raw == sum(r.raw for r in replies)


def test_the_producer_keeps_n_requests_in_flight_and_the_books_balance(sessions, database_url: str) -> None:
    backend = ScriptedBackend(distinct_tasks(), max_in_flight=8, delay=0.05)
    settings, registry = make(database_url, backend)
    claim = setup_job(sessions, settings, registry, count=120)
    assert run(sessions, settings, registry, claim) == JobStatus.succeeded
    job, items, replies = stored(sessions, claim.job_id)
    assert backend.max_seen_in_flight == 8  # saturated, and never more than the backend's limit
    assert (
        job.accepted == 120
    )  # exactly the count: what the last reply kept beyond it is filtered as over_count
    assert_consistent(job, items, replies)
    assert all(i.reply_id is not None for i in items)


def test_a_slow_accept_step_holds_the_producer_back(sessions, database_url: str, monkeypatch) -> None:  # noqa: ANN001
    """Backpressure: a backend that answers at once and an accept step that takes its time. The replies answered
    but not yet accepted pile up to the runner's bound, and not one further: the producer waits for the accept."""
    good = distinct_tasks()
    answered = accepted = peak = 0

    def reply(prompt: str) -> str:
        nonlocal answered, peak
        answered += 1
        peak = max(peak, answered - accepted)
        return good(prompt)

    original = AcceptStep.accept

    def slow_accept(self: AcceptStep, replies: Any) -> Any:
        nonlocal accepted
        time.sleep(0.2)
        outcome = original(self, replies)
        # Counted before the runner frees their places, so a place is never counted free too soon.
        accepted += len(replies)
        return outcome

    monkeypatch.setattr(AcceptStep, "accept", slow_accept)
    backend = ScriptedBackend(reply, max_in_flight=4)  # no delay: answers as fast as the producer asks
    settings, registry = make(database_url, backend)
    claim = setup_job(sessions, settings, registry, count=2000, max_prompts=100_000)
    assert run(sessions, settings, registry, claim) == JobStatus.succeeded
    slots = 4  # four requests of one sequence each
    bound = 2 * slots + MAX_REPLIES_PER_ACCEPT // 4
    assert answered > 2 * bound  # the job needed far more replies than the bound lets wait ...
    assert bound - slots <= peak <= bound, (peak, bound)  # ... and they queued up to the bound, never past it
    job, items, replies = stored(sessions, claim.job_id)
    assert job.accepted >= 2000
    assert_consistent(job, items, replies)


def test_requests_still_in_flight_are_cancelled_once_the_count_is_reached(
    sessions, database_url: str
) -> None:
    calls = itertools.count()
    backend = ScriptedBackend(
        distinct_tasks(), max_in_flight=6, delay=lambda _p: 0.01 if next(calls) < 2 else 30.0
    )
    settings, registry = make(database_url, backend)
    claim = setup_job(sessions, settings, registry, count=10)
    started = time.monotonic()
    assert run(sessions, settings, registry, claim) == JobStatus.succeeded
    assert time.monotonic() - started < 10
    assert backend.cancelled >= 1  # the slow ones were abandoned, not awaited
    job, items, replies = stored(sessions, claim.job_id)
    assert job.accepted == 10 and len(replies) == 2
    assert_consistent(job, items, replies)


def test_a_failed_request_is_counted_and_the_job_goes_on(sessions, database_url: str) -> None:
    good = distinct_tasks()
    script = itertools.count()

    def reply(prompt: str) -> Any:
        n = next(script)
        if n == 1:
            return LLMRequestError("HTTP 400: this prompt is too long for the context window")
        if n == 3:
            return None  # content: null
        return good(prompt)

    backend = ScriptedBackend(reply, max_in_flight=1)
    settings, registry = make(database_url, backend)
    claim = setup_job(sessions, settings, registry, count=15)
    assert run(sessions, settings, registry, claim) == JobStatus.succeeded
    job, items, replies = stored(sessions, claim.job_id)
    assert job.errors == 2 and job.accepted >= 15
    assert job.last_error is not None and "content: null" in job.last_error
    # One request at a time, so the script's turns are the request numbers: each failure is stored with its reply.
    assert {r.request_no: r.error for r in replies if r.error} == {
        1: "HTTP 400: this prompt is too long for the context window",
        3: "of 1 choice(s), 1 came back without text (content: null or empty)",
    }
    assert_consistent(job, items, replies)


def test_errors_past_the_budget_fail_the_job_naming_the_cause(sessions, database_url: str) -> None:
    backend = ScriptedBackend(
        lambda _p: LLMUnavailableError("LLM server http://gpu:8000/v1 failed after 7 attempts: HTTP 503"),
        max_in_flight=2,
    )
    settings, registry = make(database_url, backend, job_max_attempts=1)  # its last attempt: no retry
    claim = setup_job(sessions, settings, registry, count=50, max_errors=3)
    assert run(sessions, settings, registry, claim) == JobStatus.failed
    job, items, replies = stored(sessions, claim.job_id)
    assert "error budget of 3" in job.error and "HTTP 503" in job.error
    assert 4 <= job.errors <= 4 + 2 and job.accepted == 0  # the budget, plus what was in flight
    assert_consistent(job, items, replies)


def test_a_server_down_past_the_budget_retries_the_job_later_and_it_resumes(
    sessions, database_url: str
) -> None:
    """A transient outage (every request unreachable after its own retries) ends the attempt, not the job: it is
    queued again behind a backoff, and the next claim resumes from what it stored, with a fresh error budget."""
    outage = {"on": True}
    tasks = distinct_tasks()

    def script(prompt: str) -> Any:
        if outage["on"]:
            return LLMUnavailableError(
                "LLM server http://gpu:8000/v1 failed after 7 attempt(s): connection refused"
            )
        return tasks(prompt)

    backend = ScriptedBackend(script, max_in_flight=2)
    settings, registry = make(database_url, backend, job_max_attempts=3, job_retry_initial_seconds=0)
    claim = setup_job(sessions, settings, registry, count=10, max_errors=2)
    assert run(sessions, settings, registry, claim) is None  # handed back, not failed
    job, items, replies = stored(sessions, claim.job_id)
    assert job.status is JobStatus.queued and job.error is None and job.not_before is not None
    assert "retrying" in job.message and "connection refused" in job.message
    assert 3 <= job.errors and job.accepted == 0 and job.busy_seconds > 0
    assert_consistent(job, items, replies)
    outage["on"] = False
    with transaction(sessions) as session:
        again = claim_next(session, GenerationJob, "tester-2", settings.job_lease_seconds)
    assert again is not None and again.job_id == claim.job_id and again.attempt == 2
    _, registry = make(database_url, ScriptedBackend(script, max_in_flight=2))  # the first run closed its own
    status = run(sessions, settings, registry, again)
    job, items, replies = stored(sessions, claim.job_id)
    assert status is JobStatus.succeeded, job.error
    assert job.accepted >= 10 and job.not_before is None
    assert_consistent(job, items, replies)


def test_an_error_no_retry_can_fix_fails_the_job_at_once(sessions, database_url: str) -> None:
    backend = ScriptedBackend(
        lambda _p: LLMFatalError("not found (HTTP 404; unknown model or wrong base_url)"), max_in_flight=4
    )
    settings, registry = make(database_url, backend)
    claim = setup_job(sessions, settings, registry, count=50)
    assert run(sessions, settings, registry, claim) == JobStatus.failed
    job, _, _ = stored(sessions, claim.job_id)
    assert "unknown model" in job.error
    assert len(backend.calls) <= 4  # the requests in flight when the first answer came, no more


def test_cancel_stops_a_job_whose_requests_hang(sessions, database_url: str) -> None:
    backend = ScriptedBackend(distinct_tasks(), max_in_flight=4, delay=60.0)
    settings, registry = make(database_url, backend, job_lease_seconds=1.0)
    claim = setup_job(sessions, settings, registry, count=50)

    async def go() -> JobStatus | None:
        task = asyncio.create_task(GenerationRunner(sessions, settings, registry).run(claim))
        await until(lambda: backend.in_flight == 4, task)  # every slot hangs
        with transaction(sessions) as session:
            assert request_cancel(session, GenerationJob, claim.job_id) == JobStatus.running
        return await asyncio.wait_for(task, timeout=10)

    assert asyncio.run(go()) == JobStatus.cancelled
    assert backend.cancelled == 4
    job, _, _ = stored(sessions, claim.job_id)
    assert job.status == JobStatus.cancelled and job.finished_at is not None


def test_a_runner_that_lost_its_lease_stops_writes_nothing_more_and_cancels_its_requests(
    sessions, database_url: str
) -> None:
    """Requests sent after the job was taken over never answer: the run can only end by cancelling them."""
    taken_over = False
    backend = ScriptedBackend(
        distinct_tasks(), max_in_flight=2, delay=lambda _p: 60.0 if taken_over else 0.05
    )
    settings, registry = make(database_url, backend, job_lease_seconds=1.0)
    claim = setup_job(sessions, settings, registry, count=10_000)

    async def go() -> tuple[JobStatus | None, int]:
        nonlocal taken_over
        task = asyncio.create_task(GenerationRunner(sessions, settings, registry).run(claim))
        await until(lambda: len(backend.calls) >= 4, task)  # the producer runs (the index came first)
        with transaction(sessions) as session:  # another worker took the job over
            session.execute(
                update(GenerationJob)
                .where(GenerationJob.id == claim.job_id)
                .values(worker_id="other", attempt=claim.attempt + 1)
            )
        taken_over = True
        calls_then = len(backend.calls)
        with sessions() as session:
            items_then = len(session.scalars(select(Item.id).where(Item.job_id == claim.job_id)).all())
        return await asyncio.wait_for(task, timeout=10), items_then, calls_then

    status, items_then, calls_then = asyncio.run(go())
    assert status is None
    job, items, _ = stored(sessions, claim.job_id)
    assert len(items) == items_then  # not one write after the lease was lost
    assert job.status == JobStatus.running and job.worker_id == "other"
    # Every request sent after the takeover (it would hang for a minute) was cancelled when the loss was noticed,
    # and the run ended within the 10 s: none is left in flight. (How many there were depends on the machine's
    # speed: a busy one may still be holding the producer back with replies the accept step has not taken.)
    assert backend.cancelled >= len(backend.calls) - calls_then and backend.in_flight == 0


def request_seed(sessions, settings: Settings, job_id: int, number: int) -> int | None:  # noqa: ANN001
    """The sampling seed request `number` of a job carries: it identifies the request among the calls."""
    with sessions() as session:
        job = session.get(GenerationJob, job_id)
        seeds = list(session.scalars(select(SeedTask).where(SeedTask.dataset_id == job.dataset_id)))
        params = resolve_params(job.params, settings, settings.backends[job.backend])
        job_seed = job.seed
    spec = RequestSpec.of(params)
    templates = {lang: load_templates(settings.prompts_dir, params.mode, lang) for lang in ("en", "zh")}
    request = build_request(spec, templates, [example_of(s) for s in seeds], job_seed=job_seed, number=number)
    return request.sampling.seed


def test_a_resumed_job_never_repeats_a_request_it_stored(sessions, database_url: str) -> None:
    backend = ScriptedBackend(distinct_tasks(), max_in_flight=3, delay=0.02)
    settings, registry = make(database_url, backend)
    claim = setup_job(sessions, settings, registry, count=600, seed=11)

    async def first_run() -> None:
        task = asyncio.create_task(GenerationRunner(sessions, settings, registry).run(claim))
        await until(lambda: len(stored(sessions, claim.job_id)[2]) >= 5, task)
        task.cancel()  # a worker stopping: the job goes back to the queue at once
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(first_run())
    _, _, replies_before = stored(sessions, claim.job_id)
    assert replies_before
    with sessions() as session:
        assert (
            session.get(GenerationJob, claim.job_id).status == JobStatus.queued
        )  # released, not left running
    stored_seeds = {request_seed(sessions, settings, claim.job_id, r.request_no) for r in replies_before}
    first_seeds = [call.params.seed for call in backend.calls]
    assert stored_seeds <= set(first_seeds)  # the seeds do identify the requests
    with transaction(sessions) as session:
        second = claim_next(session, GenerationJob, "tester-2", 60, job_id=claim.job_id)
    assert second is not None and second.attempt == 2
    backend.calls.clear()
    assert (
        run(sessions, settings, BackendRegistry(settings.backends, factory=lambda n, s: backend), second)
        == JobStatus.succeeded
    )
    assert not stored_seeds & {call.params.seed for call in backend.calls}  # nothing stored was asked again
    job, items, replies = stored(sessions, claim.job_id)
    assert_consistent(job, items, replies)
    assert {r.request_no for r in replies} >= {r.request_no for r in replies_before}
    assert {r.attempt for r in replies} == {1, 2}


def test_model_text_with_nul_and_lone_surrogates_is_stored_clean(sessions, database_url: str) -> None:
    dirty = json.dumps(
        {
            "tasks": [
                {
                    "instruction": "Explain\u0000 the \ud83d moon landing to a curious child.",
                    "input": "\u0000",
                    "output": "It was 1969 \udfff.",
                }
            ]
        }
    )
    backend = ScriptedBackend([dirty], max_in_flight=1, cycle=True)
    settings, registry = make(database_url, backend)
    claim = setup_job(sessions, settings, registry, count=1)
    assert run(sessions, settings, registry, claim) == JobStatus.succeeded
    _, items, replies = stored(sessions, claim.job_id)
    item = items[0]
    assert item.instruction == "Explain the \ufffd moon landing to a curious child."
    assert item.input == "" and item.output == "It was 1969 \ufffd."
    assert "\x00" not in replies[0].choices[0]["text"]
