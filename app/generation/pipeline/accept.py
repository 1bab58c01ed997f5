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
from app.generation.pipeline.screening import ScreenedReply
from app.jobs.queue import Claim, fenced_update

log = logging.getLogger(__name__)

NEAR_DUPLICATE = "near_duplicate"
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
        self._thresholds = thresholds
        self._model = model[:200]
        self._index: IndexProcess | None = None  # in a child process: see app/dedup/remote.py
        self._last_seed_id = 0
        self._last_item_id = 0
        self._next_key = 0
        self._new_ids: dict[int, int] = {}  # ("new", k) index keys of this runner's kept items -> item ids

    # --- the index ----------------------------------------------------------------------------------------

    def load(self) -> None:
        """Build the index from the dataset as it is now (outside the lock: the accept step catches up)."""
        with self._sessions() as session:
            self._rebuild(session)

    def _rebuild(self, session: Session) -> None:
        self.close()
        self._index = IndexProcess(**index_options(self._thresholds))
        self._new_ids = {}
        self._last_seed_id, self._last_item_id = catch_up(session, self._index, self._dataset_id, 0, 0)

    def _catch_up(self, session: Session) -> None:
        assert self._index is not None
        self._last_seed_id, self._last_item_id = catch_up(
            session, self._index, self._dataset_id, self._last_seed_id, self._last_item_id
        )

    def close(self) -> None:
        """End the index's process (the next accept, if any, builds a fresh one)."""
        index, self._index = self._index, None
        if index is not None:
            index.close()

    # --- accepting ----------------------------------------------------------------------------------------

    def accept(self, replies: Sequence[ScreenedReply]) -> AcceptOutcome:
        """Store `replies` in order (stopping once the job's count is reached) in one fenced transaction."""
        try:
            with transaction(self._sessions) as session:
                serialize(session, ACCEPT_LOCK, self._dataset_id)
                if self._index is None:
                    self._rebuild(session)
                else:
                    self._catch_up(session)
                outcome, new_ids, last_id = self._store(session, replies)
        except BaseException:
            self.close()  # the index may hold texts of this batch, which was not stored: rebuild it
            raise
        self.counters = outcome.counters
        self._new_ids.update(new_ids)
        self._last_item_id = max(self._last_item_id, last_id)
        return outcome

    def _store(
        self, session: Session, replies: Sequence[ScreenedReply]
    ) -> tuple[AcceptOutcome, dict[int, int], int]:
        assert self._index is not None
        counters = self.counters.copy()
        reply_rows: list[dict[str, Any]] = []
        item_rows: list[
            dict[str, Any]
        ] = []  # each with "_reply" (position) and "_key" (new index key or None)
        checks: list[DuplicateCheck | None] = []
        # One greedy pass over the whole batch, in reply order (vectorised blocks beat many small calls). If the
        # count is reached part-way, the index also holds texts of replies not stored: the job ends there.
        passing = [c for reply in replies for c in reply.candidates if c.reason is None]
        first_key = self._next_key
        self._next_key += len(passing)
        verdicts = iter(
            self._index.check_and_add_many(
                [(("new", first_key + i), c.item.instruction) for i, c in enumerate(passing)]
            )
        )
        key_iter = iter(range(first_key, first_key + len(passing)))
        stored = 0
        for reply in replies:
            if counters.accepted >= self._count:
                break
            stored += 1
            accepted_here = 0
            for candidate in reply.candidates:
                # Every row has every key: an executemany INSERT takes its columns from the first row.
                row = {
                    "dataset_id": self._dataset_id,
                    "job_id": self._claim.job_id,
                    "instruction": candidate.item.instruction,
                    "input": candidate.item.input,
                    "output": candidate.item.output,
                    "model": self._model,
                    "filter_reason": None,
                    "duplicate_signal": None,
                    "_reply": len(reply_rows),
                    "_key": None,
                }
                check: DuplicateCheck | None = None
                if candidate.reason is not None:
                    row.update(status=ItemStatus.filtered, filter_reason=candidate.reason)
                    counters.filtered[candidate.reason] += 1
                else:
                    check = next(verdicts)
                    key = next(key_iter)
                    if check.is_duplicate:
                        row.update(
                            status=ItemStatus.filtered,
                            filter_reason=NEAR_DUPLICATE,
                            duplicate_signal=check.signal,
                        )
                        counters.duplicates += 1
                    else:
                        row.update(status=ItemStatus.pending, _key=key)
                        counters.accepted += 1
                        accepted_here += 1
                row.update(self._evidence(check))
                item_rows.append(row)
                checks.append(check)
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
                keys = [row.pop("_key") for row in item_rows]
                item_ids = list(
                    session.scalars(
                        insert(Item.__table__).returning(Item.__table__.c.id, sort_by_parameter_order=True),
                        item_rows,
                    )
                )
                new_ids = {
                    key: item_id for key, item_id in zip(keys, item_ids, strict=True) if key is not None
                }
                last_id = max(item_ids)
                self._link_batch_neighbours(session, item_ids, checks, new_ids)
        cancel_requested = fenced_update(session, GenerationJob, self._claim, **counters.values())
        outcome = AcceptOutcome(counters, cancel_requested, stored, len(replies) - stored)
        return outcome, new_ids, last_id

    def _evidence(self, check: DuplicateCheck | None) -> dict[str, Any]:
        """The item columns that keep the evidence: the nearest neighbour by ROUGE-L (or by the signal that
        fired) and every score. A neighbour stored in this very batch has no id yet: linked after the insert."""
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

    def _link_batch_neighbours(
        self,
        session: Session,
        item_ids: list[int],
        checks: list[DuplicateCheck | None],
        new_ids: dict[int, int],
    ) -> None:
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
