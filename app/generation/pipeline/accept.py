"""The accept step: one at a time per dataset, across jobs and processes, so near-duplicates never slip in.

Each call is one transaction that
1. takes the dataset's accept lock (a PostgreSQL advisory lock; on SQLite, BEGIN IMMEDIATE holds the write lock),
2. lets the job's near-duplicate index catch up with the seeds and items others stored since (`id > last seen`;
   every item of a dataset is inserted under this lock, so ids seen in order are ids committed in order),
3. deduplicates the new candidates against the index (greedily, in reply order),
4. inserts the replies and their items, with each item's verdict and nearest neighbour,
5. writes the job's counters through the lease fence, so a runner that lost its job writes nothing at all.
If any of it fails the transaction rolls back and the index, which may already hold this batch's texts, is
rebuilt from the database before the next call.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import serialize, transaction
from app.datasets.service import seeds_after
from app.dedup import DuplicateCheck, NearDuplicateIndex
from app.dedup.remote import IndexProcess
from app.generation.models import GenerationJob, GenerationReply, Item, ItemStatus
from app.generation.pipeline.screening import Candidate, ScreenedReply
from app.jobs.queue import Claim, fenced_update
from app.ops import metrics
from app.reports.language import script_language

log = logging.getLogger(__name__)

NEAR_DUPLICATE = "near_duplicate"
# A candidate that passed every filter and the index, in the reply that reached the job's count, after the
# count: stored (every parsed item is), filtered with this reason, so a job accepts exactly its count.
OVER_COUNT = "over_count"
ACCEPT_LOCK = 0x5350_5254  # "SPRT": the advisory-lock namespace of accept steps (the key is the dataset id)
# Kept items report their nearest neighbour from this ROUGE-L F1 up (review sorts by it: "most doubtful first").
# 0.6 rather than the index default 0.5: the search below 0.6 doubled the accept step's CPU on real data.
NEIGHBOUR_FLOOR = 0.6


@dataclass(slots=True)
class Counters:
    """A job's counters as the runner keeps them; only this job's fenced runner writes them."""

    requests: int = 0
    prompts: int = 0
    raw: int = 0
    parsed: int = 0
    filtered: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    accepted: int = 0
    errors: int = 0
    last_error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def of(cls, job: GenerationJob) -> Counters:
        return cls(
            requests=job.requests,
            prompts=job.prompts,
            raw=job.raw,
            parsed=job.parsed,
            filtered=Counter({k: int(v) for k, v in (job.filtered or {}).items()}),
            duplicates=job.duplicates,
            accepted=job.accepted,
            errors=job.errors,
            last_error=job.last_error,
            prompt_tokens=job.prompt_tokens,
            completion_tokens=job.completion_tokens,
        )

    def copy(self) -> Counters:
        return replace(self, filtered=Counter(self.filtered))

    def values(self) -> dict[str, Any]:
        """The job columns these counters are stored in."""
        return {
            "requests": self.requests,
            "prompts": self.prompts,
            "raw": self.raw,
            "parsed": self.parsed,
            "filtered": dict(self.filtered),
            "duplicates": self.duplicates,
            "accepted": self.accepted,
            "errors": self.errors,
            "last_error": self.last_error,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    def as_dict(self) -> dict[str, Any]:
        return self.values()


@dataclass(frozen=True, slots=True)
class Thresholds:
    rouge_threshold: float
    fuzzy_cutoff: float | None


@dataclass(frozen=True, slots=True)
class AcceptOutcome:
    counters: Counters
    cancel_requested: bool
    stored: int  # replies stored
    skipped: int  # replies not stored because the job had already accepted its count


class DatasetIndex:
    """A dataset's near-duplicate index as one writer sees it: seeds and kept items up to the last ids it saw,
    plus what this writer stored itself. Used under the dataset's accept lock (see `serialize`), by a job's
    accept step and by an import alike."""

    def __init__(self, dataset_id: int, thresholds: Thresholds) -> None:
        self.dataset_id = dataset_id
        self._thresholds = thresholds
        self._index: IndexProcess | None = None  # in a child process: see app/dedup/remote.py
        self._last_seed_id = 0
        self._last_item_id = 0
        self._next_key = 0
        self._new_ids: dict[int, int] = {}  # ("new", k) index keys of this writer's kept items -> item ids

    def sync(self, session: Session) -> None:
        """Build the index from the dataset, or catch up with what others stored since it last looked."""
        if self._index is None:
            self._index = IndexProcess(**index_options(self._thresholds))
            self._new_ids = {}
            self._last_seed_id = self._last_item_id = 0
        self._last_seed_id, self._last_item_id = catch_up(
            session, self._index, self.dataset_id, self._last_seed_id, self._last_item_id
        )

    def check(self, texts: Sequence[str]) -> tuple[list[DuplicateCheck], int]:
        """Greedy checks of new texts (each kept one joins the index); and the index key of the first."""
        assert self._index is not None
        first = self._next_key
        self._next_key += len(texts)
        return self._index.check_and_add_many([(("new", first + i), t) for i, t in enumerate(texts)]), first

    def evidence(self, check: DuplicateCheck | None) -> dict[str, Any]:
        """The item columns that keep the evidence: the nearest neighbour by ROUGE-L (or by the signal that
        fired) and every score. A neighbour stored in this very batch has no id yet: see `link`."""
        if check is None:
            return dict(_NO_EVIDENCE)
        kind, ident = resolve_key(evidence_key(check), self._new_ids)
        return {
            "nearest_kind": kind,
            "nearest_id": ident,
            "nearest_rouge_l": check.nearest_score,
            "fuzzy_score": check.fuzzy_score,
            "semantic_score": check.semantic_score,
        }

    def link(
        self,
        session: Session,
        item_ids: list[int],
        checks: list[DuplicateCheck | None],
        new_ids: dict[int, int],
    ) -> None:
        """Point items at neighbours inserted in the same batch, now that those have ids."""
        rows = []
        for item_id, check in zip(item_ids, checks, strict=True):
            key = evidence_key(check) if check is not None else None
            if key is not None and key[0] == "new" and key[1] not in self._new_ids:  # type: ignore[index]
                kind, ident = resolve_key(key, new_ids)
                rows.append({"b_id": item_id, "b_kind": kind, "b_nearest": ident})
        if rows:
            table = Item.__table__
            session.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(nearest_kind=bindparam("b_kind"), nearest_id=bindparam("b_nearest")),
                rows,
            )

    def committed(self, new_ids: dict[int, int], last_id: int) -> None:
        """The batch's transaction committed: its kept items are the dataset's now."""
        self._new_ids.update(new_ids)
        self._last_item_id = max(self._last_item_id, last_id)

    def close(self) -> None:
        """End the index's process; a failed batch's texts may be in it, so the next sync builds a fresh one."""
        index, self._index = self._index, None
        if index is not None:
            index.close()


def judge(reason: str | None, check: DuplicateCheck | None) -> dict[str, Any]:
    """An item's status columns from its heuristic verdict and its near-duplicate check."""
    if reason is not None:
        return {"status": ItemStatus.filtered, "filter_reason": reason, "duplicate_signal": None}
    assert check is not None
    if check.is_duplicate:
        return {
            "status": ItemStatus.filtered,
            "filter_reason": NEAR_DUPLICATE,
            "duplicate_signal": check.signal,
        }
    return {"status": ItemStatus.pending, "filter_reason": None, "duplicate_signal": None}


class AcceptStep:
    """The accept step of one running job (one claim); its index is private, its lock is the dataset's."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        claim: Claim,
        *,
        dataset_id: int,
        count: int,
        counters: Counters,
        thresholds: Thresholds,
        model: str,
    ) -> None:
        self._sessions = sessions
        self._claim = claim
        self._dataset_id = dataset_id
        self._count = count
        self.counters = counters
        self._model = model[:200]
        self._index = DatasetIndex(dataset_id, thresholds)

    def load(self) -> None:
        """Build the index from the dataset as it is now (outside the lock: the accept step catches up)."""
        with self._sessions() as session:
            self._index.sync(session)

    def close(self) -> None:
        self._index.close()

    def accept(self, replies: Sequence[ScreenedReply]) -> AcceptOutcome:
        """Store `replies` in order (stopping once the job's count is reached) in one fenced transaction."""
        started = time.perf_counter()
        before = self.counters
        try:
            with transaction(self._sessions) as session:
                serialize(session, ACCEPT_LOCK, self._dataset_id)
                self._index.sync(session)
                outcome, new_ids, last_id = self._store(session, replies)
        except BaseException:
            self.close()  # the index may hold texts of this batch, which was not stored: rebuild it
            raise
        metrics.ACCEPT_SECONDS.observe(time.perf_counter() - started)
        after = outcome.counters
        metrics.ACCEPT_CANDIDATES.labels("accepted").inc(after.accepted - before.accepted)
        metrics.ACCEPT_CANDIDATES.labels("duplicate").inc(after.duplicates - before.duplicates)
        metrics.ACCEPT_CANDIDATES.labels("filtered").inc(
            sum(after.filtered.values()) - sum(before.filtered.values())
        )
        self.counters = outcome.counters
        self._index.committed(new_ids, last_id)
        return outcome

    def _store(
        self, session: Session, replies: Sequence[ScreenedReply]
    ) -> tuple[AcceptOutcome, dict[int, int], int]:
        counters = self.counters.copy()
        # One greedy pass over the whole batch, in reply order (vectorised blocks beat many small calls). If the
        # count is reached part-way, the index also holds texts of replies not stored: the job ends there.
        judged = iter(judge_all(self._index, [c for reply in replies for c in reply.candidates]))
        reply_rows: list[dict[str, Any]] = []
        item_rows: list[dict[str, Any]] = []  # each with "_reply": its reply's position in reply_rows
        items: list[JudgedItem] = []
        stored = 0
        for reply in replies:
            if counters.accepted >= self._count:
                break
            stored += 1
            accepted_here = 0
            for candidate in reply.candidates:
                item = next(judged)
                if candidate.reason is not None:
                    counters.filtered[candidate.reason] += 1
                elif item.key is None:
                    counters.duplicates += 1
                elif counters.accepted >= self._count:
                    item = over_count(item)
                    counters.filtered[OVER_COUNT] += 1
                else:
                    counters.accepted += 1
                    accepted_here += 1
                base = {"dataset_id": self._dataset_id, "job_id": self._claim.job_id, "model": self._model}
                item_rows.append({**base, **item.columns, "_reply": len(reply_rows)})
                items.append(item)
            counters.requests += 1
            counters.prompts += reply.prompts
            counters.raw += reply.raw
            counters.parsed += len(reply.candidates)
            counters.prompt_tokens += reply.prompt_tokens
            counters.completion_tokens += reply.completion_tokens
            if reply.error is not None:
                counters.errors += 1
                counters.last_error = reply.error[:2000]
            reply_rows.append(
                {
                    "job_id": self._claim.job_id,
                    "request_no": reply.number,
                    "attempt": self._claim.attempt,
                    "prompts": reply.prompts,
                    "choices": reply.choices,
                    "error": reply.error,
                    "raw": reply.raw,
                    "parsed": len(reply.candidates),
                    "accepted": accepted_here,
                    "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": reply.completion_tokens,
                    "latency_ms": reply.latency_ms,
                }
            )

        new_ids: dict[int, int] = {}
        last_id = 0
        if reply_rows:
            reply_ids = list(
                session.scalars(
                    insert(GenerationReply.__table__).returning(
                        GenerationReply.__table__.c.id, sort_by_parameter_order=True
                    ),
                    reply_rows,
                )
            )
            if item_rows:
                for row in item_rows:
                    row["reply_id"] = reply_ids[row.pop("_reply")]
                new_ids, last_id = insert_items(session, self._index, item_rows, items)
        cancel_requested = fenced_update(session, GenerationJob, self._claim, **counters.values())
        outcome = AcceptOutcome(counters, cancel_requested, stored, len(replies) - stored)
        return outcome, new_ids, last_id


@dataclass(frozen=True, slots=True)
class JudgedItem:
    """A candidate's columns once judged (text, language, status, evidence), its check, and its index key when
    it was kept (other items may name it as their neighbour before it has an id)."""

    columns: dict[str, Any]
    check: DuplicateCheck | None
    key: int | None


def judge_all(index: DatasetIndex, candidates: Sequence[Candidate]) -> list[JudgedItem]:
    """Check every candidate that passed the heuristic filters against the index, greedily and in order."""
    passing = [c for c in candidates if c.reason is None]
    checks, first = index.check([c.item.instruction for c in passing])
    verdicts = iter(enumerate(checks, start=first))
    judged = []
    for candidate in candidates:
        key, check = next(verdicts) if candidate.reason is None else (None, None)
        text = candidate.item
        columns = {
            "instruction": text.instruction,
            "input": text.input,
            "output": text.output,
            "language": script_language(text.instruction, text.input, text.output),
            **judge(candidate.reason, check),
            **index.evidence(check),
        }
        kept = check is not None and not check.is_duplicate
        judged.append(JudgedItem(columns, check, key if kept else None))
    return judged


def over_count(item: JudgedItem) -> JudgedItem:
    """A kept candidate past the job's count: filtered as such, and no neighbour of anything."""
    columns = {
        **item.columns,
        "status": ItemStatus.filtered,
        "filter_reason": OVER_COUNT,
        "duplicate_signal": None,
    }
    return replace(item, columns=columns, key=None)


def insert_items(
    session: Session, index: DatasetIndex, rows: list[dict[str, Any]], items: list[JudgedItem]
) -> tuple[dict[int, int], int]:
    """Insert judged items (every row with every key: an executemany takes its columns from the first row);
    the index keys of the kept ones -> their ids, and the last id."""
    item_ids = list(
        session.scalars(
            insert(Item.__table__).returning(Item.__table__.c.id, sort_by_parameter_order=True), rows
        )
    )
    new_ids = {
        item.key: item_id for item, item_id in zip(items, item_ids, strict=True) if item.key is not None
    }
    index.link(session, item_ids, [item.check for item in items], new_ids)
    return new_ids, max(item_ids)


_NO_EVIDENCE = {
    "nearest_kind": None,
    "nearest_id": None,
    "nearest_rouge_l": None,
    "fuzzy_score": None,
    "semantic_score": None,
}


def index_options(thresholds: Thresholds) -> dict[str, Any]:
    return {
        "rouge_threshold": thresholds.rouge_threshold,
        "fuzzy_cutoff": thresholds.fuzzy_cutoff,
        "neighbour_floor": NEIGHBOUR_FLOOR,
    }


def new_index(thresholds: Thresholds) -> NearDuplicateIndex:
    """An index in this process (a preview's: one request, no contention)."""
    return NearDuplicateIndex(**index_options(thresholds))


def catch_up(
    session: Session,
    index: NearDuplicateIndex | IndexProcess,
    dataset_id: int,
    last_seed_id: int,
    last_item_id: int,
) -> tuple[int, int]:
    """Add the dataset's seeds and kept items with ids above the last ones seen; the new last ids."""
    seeds = seeds_after(session, dataset_id, last_seed_id)
    items = session.execute(
        select(Item.id, Item.instruction)
        .where(Item.dataset_id == dataset_id, Item.id > last_item_id, Item.status != ItemStatus.filtered)
        .order_by(Item.id)
    ).all()
    new = [(("seed", i), text) for i, text in seeds] + [(("item", row.id), row.instruction) for row in items]
    if new:  # usually nothing: only other jobs' items and new seeds arrive this way
        index.add_many(new)
    return (seeds[-1][0] if seeds else last_seed_id), (items[-1].id if items else last_item_id)


def evidence_key(check: DuplicateCheck) -> Hashable | None:
    if check.is_duplicate:
        by_signal = {"exact": check.exact_key, "fuzzy": check.fuzzy_key, "semantic": check.semantic_key}
        return by_signal.get(check.signal or "") or check.nearest_key
    return check.nearest_key


def resolve_key(key: Hashable | None, new_ids: dict[int, int]) -> tuple[str | None, int | None]:
    if key is None:
        return None, None
    kind, ident = key  # type: ignore[misc]
    if kind == "new":
        item_id = new_ids.get(ident)
        return ("item", item_id) if item_id is not None else (None, None)
    return kind, ident
