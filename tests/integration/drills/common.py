"""What the drills share: a dataset with the default seeds, jobs queued the way the API queues them, the sim
server's live figures, and the checks a run must pass after a fault (exact counts, nothing half-written,
nothing stored twice, no near-duplicate kept)."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from app.core.config import BackendSettings, Settings
from app.core.db import PROJECT_ROOT, transaction
from app.datasets.models import SeedTask
from app.datasets.seed_formats import parse_seed_file
from app.datasets.service import create_dataset, import_seeds
from app.dedup.rouge import rouge_l_f1
from app.dedup.tokenize import tokenize
from app.generation.models import GenerationJob, GenerationReply, Item, ItemStatus
from app.generation.params import GenerationParams
from app.generation.service import queue_job
from app.llm.registry import BackendRegistry

DEFAULT_SEEDS = PROJECT_ROOT / "seeds" / "default.jsonl"
ROUGE_THRESHOLD = 0.7  # Settings.rouge_threshold: a kept item's ROUGE-L F1 against any other is at most this
TASKS_PER_PROMPT = 5  # chat mode: the items one reply carries at most (Settings.tasks_per_prompt)
# Issue 15 asks that a job's accepted count equal its target. The accept step stops at reply granularity
# (app/generation/pipeline/accept.py, AcceptStep._store: the count is checked before each reply, and a reply's
# kept items are all stored), so a job ends with up to TASKS_PER_PROMPT - 1 items more than asked. Until it
# trims the last reply at the count, the drills hold it to that documented bound; then set this to True.
EXACT_COUNT = True


def new_dataset(sessions: sessionmaker[Session], name: str) -> int:
    """A dataset holding the project's default seed tasks."""
    tasks = parse_seed_file(DEFAULT_SEEDS.read_bytes(), filename=DEFAULT_SEEDS.name)
    with transaction(sessions) as session:
        dataset = create_dataset(session, name)
        import_seeds(session, dataset, tasks, source=DEFAULT_SEEDS.name)
        return dataset.id


def queue_generation(
    sessions: sessionmaker[Session], backends: dict[str, BackendSettings], dataset_id: int, **params: Any
) -> int:
    """Queue a generation job as POST /v1/datasets/{id}/generations does (the same service call)."""
    settings = Settings(_env_file=None, backends=backends, default_backend=next(iter(backends)))  # type: ignore[call-arg]
    with transaction(sessions) as session:
        job = queue_job(
            session, dataset_id, GenerationParams(**params), settings, BackendRegistry.from_settings(settings)
        )
        return job.id


def job_row(sessions: sessionmaker[Session], job_id: int) -> GenerationJob:
    with sessions() as session:
        job = session.get(GenerationJob, job_id)
        assert job is not None
        session.expunge(job)
        return job


def replies_of(sessions: sessionmaker[Session], job_id: int) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).where(GenerationReply.job_id == job_id)) or 0


# --- the sim server's own figures ------------------------------------------------------------------------------

_METRIC_RE = re.compile(r"^([a-z_:]+)(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.MULTILINE)


def sim_metrics(metrics_url: str) -> dict[str, float]:
    """The sim server's gauges and counters (summed over labels): vllm:num_requests_running (sequences being
    answered now), sim:requests_aborted_total (requests whose client went away before the answer), ..."""
    text = httpx.get(metrics_url, timeout=5.0, trust_env=False).text
    figures: dict[str, float] = {}
    for name, value in _METRIC_RE.findall(text):
        figures[name] = figures.get(name, 0.0) + float(value)
    return figures


# --- checks after the fault ------------------------------------------------------------------------------------


def near_duplicate_pairs(
    texts: Sequence[str], threshold: float = ROUGE_THRESHOLD, others: Sequence[str] = ()
) -> list[tuple[str, str, float]]:
    """Pairs of `texts` (and of a text with one of `others`) whose ROUGE-L F1, the project's exact one on its
    tokens, exceeds `threshold`."""
    tokens = [tokenize(t) for t in texts]
    found = []
    for (i, a), (j, b) in itertools.combinations(enumerate(tokens), 2):
        if (score := rouge_l_f1(a, b)) > threshold:
            found.append((texts[i], texts[j], score))
    for text, a in zip(texts, tokens, strict=True):
        for other in others:
            if (score := rouge_l_f1(a, tokenize(other))) > threshold:
                found.append((text, other, score))
    return found


@dataclass(frozen=True)
class KeptItems:
    instructions: list[str]
    by_job: Counter[int]


def check_dataset_kept(sessions: sessionmaker[Session], dataset_id: int) -> KeptItems:
    """The dataset's kept (not filtered) items: no instruction twice, no two over the ROUGE-L threshold, none
    over it against a seed task."""
    with sessions() as session:
        rows = session.execute(
            select(Item.instruction, Item.job_id).where(
                Item.dataset_id == dataset_id, Item.status != ItemStatus.filtered
            )
        ).all()
        seeds = list(session.scalars(select(SeedTask.instruction).where(SeedTask.dataset_id == dataset_id)))
    instructions = [row.instruction for row in rows]
    twice = [text for text, n in Counter(instructions).items() if n > 1]
    assert not twice, f"kept twice: {twice[:5]}"
    pairs = near_duplicate_pairs(instructions, others=seeds)
    assert not pairs, f"{len(pairs)} kept pair(s) over ROUGE-L {ROUGE_THRESHOLD}: {pairs[:3]}"
    return KeptItems(instructions, Counter(row.job_id for row in rows))


@dataclass(frozen=True)
class JobCheck:
    job_id: int
    attempt: int
    accepted: int
    requests: int
    replies_by_attempt: dict[int, int]


def check_job(sessions: sessionmaker[Session], job_id: int, count: int) -> JobCheck:
    """A finished job told one consistent story: succeeded with its count (exactly, or within one reply of it:
    see EXACT_COUNT), every stored item has its reply, every reply its items, each request number once, and the
    counters add up reply by reply and item by item."""
    with sessions() as session:
        job = session.get(GenerationJob, job_id)
        assert job is not None
        assert job.status == "succeeded", (job.status, job.error, job.message)
        assert job.lease_until is None and job.worker_id is None
        if EXACT_COUNT:
            assert job.accepted == count, (job.accepted, count)
        else:
            assert count <= job.accepted < count + TASKS_PER_PROMPT, (job.accepted, count)
        assert job.parsed == sum(job.filtered.values()) + job.duplicates + job.accepted
        replies = session.execute(
            select(
                GenerationReply.id,
                GenerationReply.request_no,
                GenerationReply.attempt,
                GenerationReply.parsed,
                GenerationReply.accepted,
                GenerationReply.error,
            ).where(GenerationReply.job_id == job_id)
        ).all()
        items = session.execute(
            select(Item.reply_id, Item.status, Item.filter_reason).where(Item.job_id == job_id)
        ).all()
        reply_jobs = dict(
            session.execute(
                select(GenerationReply.id, GenerationReply.job_id).where(
                    GenerationReply.id.in_({i.reply_id for i in items if i.reply_id is not None})
                )
            ).all()
        )
    numbers = Counter(r.request_no for r in replies)
    assert all(n == 1 for n in numbers.values()), f"request numbers stored twice: {numbers.most_common(3)}"
    assert len(replies) == job.requests, (len(replies), job.requests)
    assert sum(r.parsed for r in replies) == job.parsed == len(items)
    assert sum(r.accepted for r in replies) == job.accepted
    assert all(i.reply_id is not None and reply_jobs.get(i.reply_id) == job_id for i in items), "orphan items"
    per_reply = Counter(i.reply_id for i in items)
    kept_per_reply = Counter(i.reply_id for i in items if i.status == ItemStatus.pending)
    for reply in replies:
        assert per_reply[reply.id] == reply.parsed, f"reply {reply.request_no}: items {per_reply[reply.id]}"
        assert kept_per_reply[reply.id] == reply.accepted, f"reply {reply.request_no} half-written"
    statuses = Counter(i.status for i in items)
    assert statuses[ItemStatus.pending] == job.accepted
    assert sum(1 for i in items if i.filter_reason == "near_duplicate") == job.duplicates
    reasons = Counter(i.filter_reason for i in items if i.filter_reason not in (None, "near_duplicate"))
    assert dict(reasons) == {k: v for k, v in job.filtered.items() if v}
    return JobCheck(
        job_id, job.attempt, job.accepted, job.requests, dict(Counter(r.attempt for r in replies))
    )


def caught_across_attempts(sessions: sessionmaker[Session], job_id: int) -> int:
    """Items a later attempt of the job dropped as near-duplicates of items its first attempt had kept: the
    index rebuilt after a crash did hold what was stored before it."""
    reply = aliased(GenerationReply)
    kept_first = (
        select(Item.id)
        .join(reply, Item.reply_id == reply.id)
        .where(Item.job_id == job_id, reply.attempt == 1, Item.status != ItemStatus.filtered)
    )
    with sessions() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(Item)
                .join(GenerationReply, Item.reply_id == GenerationReply.id)
                .where(
                    Item.job_id == job_id,
                    GenerationReply.attempt > 1,
                    Item.filter_reason == "near_duplicate",
                    Item.nearest_kind == "item",
                    Item.nearest_id.in_(kept_first),
                )
            )
            or 0
        )
