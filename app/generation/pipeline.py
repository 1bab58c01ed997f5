"""Run one generation job: prompt, parse, filter, deduplicate, store, until enough items are accepted.

Each batch of prompts ends in one transaction that stores its items and the job's counters together, so a crash,
a cancel or a failing backend never leaves a half-written batch, and a resumed job continues from its counters.
The event loop only awaits: database work and deduplication run in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.core.filters import FilterConfig, check_candidate
from app.core.items import CandidateItem, ParseResult, TaskExample
from app.core.near_duplicates import DuplicateCheck, NearDuplicateIndex
from app.core.prompting import (
    choose_language,
    completion_stop_sequences,
    render_chat_messages,
    render_completion_prompt,
)
from app.core.response_parsing import parse_json_tasks, parse_numbered_tasks, tasks_json_schema
from app.db import transaction
from app.generation.backends import BackendPool
from app.generation.dedup_step import screen_candidates
from app.generation.jobs import get_job, renew_lease
from app.generation.params import GenerationParams, ResolvedParams, resolve_params
from app.generation.templates import PromptTemplates, load_templates
from app.llm import ChatMessage, Completion, LLMBackend, LLMError, SamplingParams
from app.models import GenerationJob, Item, ItemStatus, JobStatus, SeedTask, utcnow

log = logging.getLogger(__name__)

NEAR_DUPLICATE = "near_duplicate"
LEASE = timedelta(seconds=60)
LEASE_RENEW_SECONDS = 15.0

ProgressCallback = Callable[[dict[str, object]], None]


@dataclass(slots=True)
class JobContext:
    job_id: int
    dataset_id: int
    params: ResolvedParams
    examples: list[TaskExample]
    counters: dict[str, object]
    templates: dict[str, PromptTemplates]  # by language, read once per job
    # Keys of the near-duplicate index: ("seed", id), ("item", id), or ("new", n) until the row has its id.
    new_item_ids: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Screened:
    candidate: CandidateItem
    reason: str | None
    check: DuplicateCheck | None


def counters_of(job: GenerationJob) -> dict[str, object]:
    return {
        "requested": job.requested,
        "prompts": job.prompts,
        "raw": job.raw,
        "parsed": job.parsed,
        "filtered": dict(job.filtered or {}),
        "duplicates": job.duplicates,
        "accepted": job.accepted,
    }


class GenerationRunner:
    def __init__(
        self, session_factory: sessionmaker[Session], settings: Settings, backends: BackendPool
    ) -> None:
        self._sessions = session_factory
        self._settings = settings
        self._backends = backends

    async def run(
        self, job_id: int, *, worker_id: str, on_progress: ProgressCallback | None = None
    ) -> JobStatus:
        """Run a claimed (status running) job to its end and return its final status."""
        heartbeat = asyncio.create_task(self._keep_lease(job_id, worker_id))
        try:
            status, message, error = await self._run(job_id, on_progress)
        except LLMError as exc:
            status, message, error = JobStatus.failed, None, str(exc)
        except Exception as exc:  # noqa: BLE001 (a job must never stay "running" because of a bug)
            log.exception("generation job %s crashed", job_id)
            status, message, error = JobStatus.failed, None, f"internal error: {type(exc).__name__}: {exc}"
        finally:
            heartbeat.cancel()
        await asyncio.to_thread(self._finish, job_id, status, message, error)
        return status

    async def _run(
        self, job_id: int, on_progress: ProgressCallback | None
    ) -> tuple[JobStatus, str | None, str | None]:
        ctx, index = await asyncio.to_thread(self._load, job_id)
        backend = await self._backends.get(ctx.params.llm)
        rng = random.Random(ctx.params.seed if ctx.params.seed is not None else job_id)
        filters = FilterConfig()
        new_keys = 0
        while True:
            counters = ctx.counters
            if counters["accepted"] >= ctx.params.count:  # type: ignore[operator]
                return JobStatus.succeeded, None, None
            budget_left = ctx.params.max_prompts - counters["prompts"]  # type: ignore[operator]
            if budget_left <= 0:
                return (
                    JobStatus.succeeded,
                    f"prompt budget of {ctx.params.max_prompts} used up: accepted {counters['accepted']} "
                    f"of {ctx.params.count} (raise max_prompts or use a stronger model)",
                    None,
                )
            if await asyncio.to_thread(self._cancel_requested, job_id):
                return (
                    JobStatus.cancelled,
                    "cancelled while running; the items of finished batches are kept",
                    None,
                )

            n_prompts = min(ctx.params.prompts_per_request, budget_left)
            completions, results = await self._generate(backend, ctx, rng, n_prompts)
            candidates = [item for result in results for item in result.items]
            reasons = [check_candidate(item, filters) for item in candidates]
            first_key, new_keys = new_keys, new_keys + len(candidates)
            keyed = [
                (("new", first_key + i), c.instruction)
                for i, (c, reason) in enumerate(zip(candidates, reasons, strict=True))
                if reason is None
            ]
            checks = dict(zip((k for k, _ in keyed), await screen_candidates(index, keyed), strict=True))
            screened = [
                Screened(c, reason, checks.get(("new", first_key + i)))
                for i, (c, reason) in enumerate(zip(candidates, reasons, strict=True))
            ]
            ctx.counters = await asyncio.to_thread(
                self._store_batch,
                ctx,
                screened,
                first_key,
                n_prompts,
                completions,
                results,
                backend.info.model,
            )
            if on_progress is not None:
                on_progress(dict(ctx.counters))

    async def _generate(
        self, backend: LLMBackend, ctx: JobContext, rng: random.Random, n_prompts: int
    ) -> tuple[list[Completion], list[ParseResult]]:
        params = ctx.params
        k = min(params.num_examples, len(ctx.examples))
        samples = [rng.sample(ctx.examples, k) for _ in range(n_prompts)]
        languages = [params.language if params.language != "auto" else choose_language(s) for s in samples]
        sampling = SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            presence_penalty=params.presence_penalty,
            seed=None if params.seed is None else rng.randrange(2**31),
        )
        if params.llm.mode == "completions":
            prompts = [
                render_completion_prompt(
                    ctx.templates[lang].completion, s, params.tasks_per_prompt, language=lang
                )
                for s, lang in zip(samples, languages, strict=True)
            ]
            # One request carries every prompt, so the stop strings cover each language in the batch.
            stop = {
                s
                for lang in languages
                for s in completion_stop_sequences(k, params.tasks_per_prompt, language=lang)
            }
            completions = await backend.complete(prompts, replace(sampling, stop=tuple(sorted(stop))))
            results = [
                parse_numbered_tasks(c.text, finish_reason=c.finish_reason, first_index=k + 1)
                for c in completions
            ]
        else:
            conversations = []
            for s, lang in zip(samples, languages, strict=True):
                templates = ctx.templates[lang]
                messages = render_chat_messages(
                    templates.chat_system, templates.chat_user, s, params.tasks_per_prompt
                )
                conversations.append([ChatMessage(role=role, content=text) for role, text in messages])
            schema = tasks_json_schema(params.tasks_per_prompt)
            completions = await backend.chat(conversations, sampling, json_schema=schema)
            results = [parse_json_tasks(c.text, finish_reason=c.finish_reason) for c in completions]
        return completions, results

    # --- database steps (run in worker threads) -------------------------------------------------------------

    def _load(self, job_id: int) -> tuple[JobContext, NearDuplicateIndex]:
        with self._sessions() as session:
            job = get_job(session, job_id)
            params = resolve_params(GenerationParams.model_validate(job.params), self._settings)
            seeds = list(session.scalars(select(SeedTask).where(SeedTask.dataset_id == job.dataset_id)))
            kept_items = session.execute(
                select(Item.id, Item.instruction).where(
                    Item.dataset_id == job.dataset_id, Item.status != ItemStatus.filtered
                )
            ).all()
            languages = ("en", "zh") if params.language == "auto" else (params.language,)
            templates = {
                lang: load_templates(self._settings.prompts_dir, params.llm.mode, lang) for lang in languages
            }
            examples = [_example_of(s) for s in seeds]
            ctx = JobContext(job.id, job.dataset_id, params, examples, counters_of(job), templates)
        if not ctx.examples:
            raise LLMError("the dataset has no seed tasks: import seeds before generating")
        index = NearDuplicateIndex(rouge_threshold=params.rouge_threshold, fuzzy_cutoff=params.fuzzy_cutoff)
        index.add_many([(("seed", s.id), s.instruction) for s in seeds])
        index.add_many([(("item", row.id), row.instruction) for row in kept_items])
        return ctx, index

    def _cancel_requested(self, job_id: int) -> bool:
        with self._sessions() as session:
            return bool(
                session.scalar(select(GenerationJob.cancel_requested).where(GenerationJob.id == job_id))
            )

    def _store_batch(
        self,
        ctx: JobContext,
        screened: Sequence[Screened],
        first_key: int,
        n_prompts: int,
        completions: Sequence[Completion],
        results: Sequence[ParseResult],
        model: str,
    ) -> dict[str, object]:
        filtered: Counter[str] = Counter()
        duplicates = accepted = 0
        with transaction(self._sessions) as session:
            job = get_job(session, ctx.job_id)
            rows: list[tuple[int, Screened, Item]] = []
            for offset, s in enumerate(screened):
                item = Item(
                    dataset_id=ctx.dataset_id,
                    job_id=ctx.job_id,
                    instruction=s.candidate.instruction,
                    input=s.candidate.input,
                    output=s.candidate.output,
                    model=model[:200],
                    status=ItemStatus.pending,
                )
                if s.reason is not None:
                    item.status, item.filter_reason = ItemStatus.filtered, s.reason
                    filtered[s.reason] += 1
                elif s.check is not None and s.check.is_duplicate:
                    item.status, item.filter_reason = ItemStatus.filtered, NEAR_DUPLICATE
                    item.duplicate_signal = s.check.signal
                    duplicates += 1
                else:
                    accepted += 1
                session.add(item)
                rows.append((first_key + offset, s, item))
            session.flush()  # ids for this batch's items, which may be each other's nearest neighbours
            for key, _, item in rows:
                if item.status == ItemStatus.pending:
                    ctx.new_item_ids[key] = item.id
            for _, s, item in rows:
                if s.check is not None:
                    _record_neighbours(item, s.check, ctx.new_item_ids)
            job.prompts += n_prompts
            job.raw += sum(len(r.items) + r.unparsed for r in results)
            job.parsed += len(screened)
            job.filtered = dict(Counter(job.filtered or {}) + filtered)
            job.duplicates += duplicates
            job.accepted += accepted
            job.prompt_tokens += sum(c.prompt_tokens for c in completions)
            job.completion_tokens += sum(c.completion_tokens for c in completions)
            return counters_of(job)

    def _finish(self, job_id: int, status: JobStatus, message: str | None, error: str | None) -> None:
        with transaction(self._sessions) as session:
            job = get_job(session, job_id)
            job.status = status
            job.message = message
            job.error = error
            job.finished_at = utcnow()
            job.lease_until = None

    async def _keep_lease(self, job_id: int, worker_id: str) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            try:
                await asyncio.to_thread(self._renew, job_id, worker_id)
            except Exception:  # noqa: BLE001 (a failed renewal is retried at the next tick)
                log.warning("could not renew the lease of job %s", job_id, exc_info=True)

    def _renew(self, job_id: int, worker_id: str) -> None:
        with transaction(self._sessions) as session:
            renew_lease(session, job_id, worker_id, LEASE)


def _example_of(seed: SeedTask) -> TaskExample:
    instance = (seed.instances or [{}])[0]
    return TaskExample(
        instruction=seed.instruction,
        input=str(instance.get("input", "")),
        output=str(instance.get("output", "")),
        is_classification=seed.is_classification,
    )


def _record_neighbours(item: Item, check: DuplicateCheck, new_item_ids: dict[int, int]) -> None:
    """Keep the evidence: the nearest neighbour by ROUGE-L (or by the signal that fired) and every score."""
    key = check.nearest_key
    if check.is_duplicate:
        key = {"exact": check.exact_key, "fuzzy": check.fuzzy_key, "semantic": check.semantic_key}.get(
            check.signal or "", key
        ) or key
    item.nearest_kind, item.nearest_id = _resolve_key(key, new_item_ids)
    item.nearest_rouge_l = check.nearest_score
    item.fuzzy_score = check.fuzzy_score
    item.semantic_score = check.semantic_score


def _resolve_key(key: Hashable | None, new_item_ids: dict[int, int]) -> tuple[str | None, int | None]:
    if key is None:
        return None, None
    kind, ident = key  # type: ignore[misc]
    if kind == "new":  # an item of this job, stored in this batch or an earlier one
        return "item", new_item_ids.get(ident)
    return kind, ident
