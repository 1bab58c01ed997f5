"""Bring your own data: an instruction file (Alpaca, ShareGPT, OpenAI chat JSONL) becomes items of a dataset.

Each record goes through the same heuristic filters and the same near-duplicate index as generated items, under
the dataset's accept lock, so an import and running jobs never admit near-duplicates of each other. Records are
stored in chunks, each one transaction; the import's row counts them as it goes, so an import cut short says how
far it got, and what it stored is whole. Every drop keeps its reason; the rest waits for review as `pending`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import serialize, transaction, utcnow
from app.core.errors import NotFoundError
from app.core.text import storable
from app.datasets.service import get_dataset
from app.generation.candidates import CandidateItem
from app.generation.filters import FilterConfig, check_candidate
from app.generation.item_formats import ItemIn
from app.generation.models import ImportStatus, ItemImport
from app.generation.pipeline.accept import (
    ACCEPT_LOCK,
    NEAR_DUPLICATE,
    DatasetIndex,
    Thresholds,
    insert_items,
    judge_all,
)
from app.generation.pipeline.screening import Candidate

CHUNK = 500  # records per transaction: the dataset's accept lock is held for one chunk at a time


def start_import(
    session: Session, dataset_id: int, *, filename: str, format: str, records: int, by: str
) -> ItemImport:
    get_dataset(session, dataset_id)
    row = ItemImport(
        dataset_id=dataset_id,
        filename=storable(filename)[:200],
        format=format,
        status=ImportStatus.running,
        created_by=by,
        records=records,
        filtered={},
    )
    session.add(row)
    session.flush()
    return row


def screen(record: ItemIn, filters: FilterConfig) -> Candidate:
    item = CandidateItem(storable(record.instruction), storable(record.input), storable(record.output))
    reason = check_candidate(item, filters)
    return Candidate(item, None if reason is None else str(reason))


@dataclass(frozen=True, slots=True)
class Tally:
    done: int = 0
    accepted: int = 0
    duplicates: int = 0
    filtered: Counter[str] = field(default_factory=Counter)

    def values(self) -> dict[str, object]:
        """The import's columns that count its records."""
        return {
            "done": self.done,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "filtered": dict(self.filtered),
        }


def run_import(
    sessions: sessionmaker[Session],
    settings: Settings,
    import_id: int,
    records: Sequence[ItemIn],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> ItemImport:
    """Store the records of a started import, chunk by chunk; the import as it ended (succeeded or failed)."""
    with sessions() as session:
        dataset_id = get_import(session, import_id).dataset_id
    index = DatasetIndex(dataset_id, Thresholds(settings.rouge_threshold, settings.fuzzy_cutoff))
    filters = FilterConfig()
    tally = Tally()
    try:
        for start in range(0, len(records), CHUNK):
            chunk = [screen(record, filters) for record in records[start : start + CHUNK]]
            tally = _store_chunk(sessions, index, import_id, chunk, tally)
            if on_progress is not None:
                on_progress(tally.done)
    except Exception as exc:
        _finish(sessions, import_id, ImportStatus.failed, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        index.close()
    return _finish(sessions, import_id, ImportStatus.succeeded, None)


def _store_chunk(
    sessions: sessionmaker[Session], index: DatasetIndex, import_id: int, chunk: list[Candidate], tally: Tally
) -> Tally:
    """One transaction under the dataset's accept lock: judge, insert, and count the chunk."""
    try:
        with transaction(sessions) as session:
            serialize(session, ACCEPT_LOCK, index.dataset_id)
            index.sync(session)
            judged = judge_all(index, chunk)
            base = {
                "dataset_id": index.dataset_id,
                "import_id": import_id,
                "job_id": None,
                "reply_id": None,
                "model": None,
            }
            new_ids, last_id = insert_items(session, index, [{**base, **j.columns} for j in judged], judged)
            tally = Tally(
                done=tally.done + len(chunk),
                accepted=tally.accepted + sum(j.key is not None for j in judged),
                duplicates=tally.duplicates
                + sum(j.columns["filter_reason"] == NEAR_DUPLICATE for j in judged),
                filtered=tally.filtered + Counter(c.reason for c in chunk if c.reason is not None),
            )
            session.execute(update(ItemImport).where(ItemImport.id == import_id).values(**tally.values()))
    except BaseException:
        index.close()  # the index may hold texts of the chunk that was not stored
        raise
    index.committed(new_ids, last_id)
    return tally


def _finish(
    sessions: sessionmaker[Session], import_id: int, status: ImportStatus, error: str | None
) -> ItemImport:
    with transaction(sessions) as session:
        session.execute(
            update(ItemImport)
            .where(ItemImport.id == import_id)
            .values(status=status, error=storable(error) if error else None, finished_at=utcnow())
        )
        return session.get_one(ItemImport, import_id)


def get_import(session: Session, import_id: int) -> ItemImport:
    row = session.get(ItemImport, import_id)
    if row is None:
        raise NotFoundError(f"import {import_id} not found")
    return row


def list_imports(session: Session, dataset_id: int) -> list[ItemImport]:
    get_dataset(session, dataset_id)
    return list(
        session.scalars(
            select(ItemImport).where(ItemImport.dataset_id == dataset_id).order_by(ItemImport.id.desc())
        )
    )
