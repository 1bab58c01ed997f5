"""Snapshots: immutable copies of a dataset's approved items, split into train and validation by a seed, with
their training and validation files (OpenAI chat JSONL) stored beside them. And the readers every export uses:
the current approved items or a snapshot's copy, in keyset pages, never all at once.

How a snapshot is made (one transaction, `create_snapshot`):
1. The approved items are copied into `snapshot_item` by one INSERT ... SELECT, in id order (position 0, 1, ...):
   one statement sees one moment on every database, however many items there are, and the copy never passes
   through Python. Later edits, reopenings or deletions of the items do not touch it.
2. The split: each item's key is sha256(seed, item id); the k items with the smallest keys are the validation
   items, k = round(n x validation_fraction), at least 1 when there are two items or more and the fraction is
   above 0, and never all of them. It depends on the seed and the set of item ids only, never on the order the
   database returns rows in; only the k smallest keys are held in memory.
3. The content hash is sha256 over the copied records in position order (`formats.canonical_line`), the
   split included: the same seed over the same items gives the same hash.
4. The training and validation files are written as the records stream out of the copy (`files.store_file`).

The row is stored first (its items point at it) and gets its files at the end, in the same transaction: no
one ever sees a snapshot without its training file.
"""

from __future__ import annotations

import hashlib
import heapq
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Integer, String, and_, case, func, insert, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings, get_settings
from app.core.errors import InvalidFieldError, NotFoundError
from app.datasets.models import Dataset
from app.datasets.service import get_dataset
from app.finetune import formats
from app.finetune.files import store_file
from app.finetune.formats import ExportRecord, Split
from app.finetune.models import Snapshot, SnapshotItem, StoredFile
from app.generation import item_query
from app.generation.models import Item, ItemStatus
from app.generation.service import item_counts, list_jobs
from app.review.models import ReviewAction, ReviewEvent

PAGE_SIZE = 1000  # records per query when reading items out
MAX_SEED = 2**63 - 1  # the seed column is a BIGINT
DEFAULT_VALIDATION_FRACTION = 0.1
PURPOSE = "fine-tune"
_UPDATE_BATCH = 500

Reader = Session | sessionmaker[Session]
K = TypeVar("K")


class EmptyExportError(ValueError):
    """Nothing to export or snapshot: a dataset without approved items, or an empty split (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class ExportSource:
    """What an export reads: the dataset's approved items as they are now (snapshot_id None), or a snapshot's
    copy, all of it or one split."""

    dataset_id: int
    snapshot_id: int | None = None
    split: Split | None = None


# --- reading records in keyset pages --------------------------------------------------------------------------


def _approved_page(
    session: Session, dataset_id: int, after: int, limit: int
) -> list[tuple[int, ExportRecord]]:
    where = item_query.conditions(dataset_id, item_query.ItemQuery(status=ItemStatus.approved))
    rows = session.execute(
        select(Item.id, Item.instruction, Item.input, Item.output, Item.language, Item.model)
        .where(*where, Item.id > after)
        .order_by(Item.id)
        .limit(limit)
    )
    return [
        (r.id, ExportRecord(r.instruction, r.input or "", r.output or "", r.language, r.model, r.id))
        for r in rows
    ]


def _snapshot_window(
    session: Session, snapshot_id: int, split: Split | None, start: int, size: int
) -> list[ExportRecord]:
    """The copy's records at positions [start, start + size), of one split or all. Positions are dense (0 to
    items - 1), so a window is an exact range of the primary key: no planner (PostgreSQL's knows nothing of rows
    written in this transaction) can turn it into a scan of the rest of the copy."""
    where = [
        SnapshotItem.snapshot_id == snapshot_id,
        SnapshotItem.position >= start,
        SnapshotItem.position < start + size,
    ]
    if split is not None:
        where.append(SnapshotItem.split == split)
    rows = session.execute(
        select(
            SnapshotItem.item_id,
            SnapshotItem.split,
            SnapshotItem.instruction,
            SnapshotItem.input,
            SnapshotItem.output,
            SnapshotItem.language,
            SnapshotItem.model,
        )
        .where(*where)
        .order_by(SnapshotItem.position)
        .limit(size)
    )
    return [
        ExportRecord(r.instruction, r.input or "", r.output or "", r.language, r.model, r.item_id, r.split)
        for r in rows
    ]


T = TypeVar("T")


def _read(reader: Reader, fetch: Callable[[Session], T]) -> T:
    """`fetch` with the reader's session. With a session factory, each read has a session of its own, closed
    before the result is handed out: a slow consumer (an HTTP client) never holds a connection or a
    transaction open."""
    if isinstance(reader, Session):
        return fetch(reader)
    with reader() as session:
        return fetch(session)


def _pages(reader: Reader, fetch: Callable[[Session, int], list[tuple[int, K]]]) -> Iterator[list[K]]:
    """Keyset pages: `fetch(session, after_key)` until a page comes back empty."""
    after = -1
    while page := _read(reader, lambda s: fetch(s, after)):  # noqa: B023 (called at once)
        after = page[-1][0]
        yield [value for _, value in page]


def _windows(
    reader: Reader, snapshot_id: int, fetch: Callable[[Session, int], list[T]], size: int
) -> Iterator[list[T]]:
    """A snapshot's copy window by window (`fetch(session, start)`), skipping empty windows."""
    total = _read(reader, lambda s: s.scalar(select(Snapshot.items).where(Snapshot.id == snapshot_id))) or 0
    for start in range(0, total, size):
        if page := _read(reader, lambda s: fetch(s, start)):  # noqa: B023 (called at once)
            yield page


def iter_record_pages(
    reader: Reader, source: ExportSource, *, page_size: int = PAGE_SIZE
) -> Iterator[list[ExportRecord]]:
    """The source's records, a page (one query) at a time, in item order."""
    if source.snapshot_id is None:
        dataset_id = source.dataset_id
        return _pages(reader, lambda s, after: _approved_page(s, dataset_id, after, page_size))
    snapshot_id, split = source.snapshot_id, source.split
    return _windows(
        reader,
        snapshot_id,
        lambda s, start: _snapshot_window(s, snapshot_id, split, start, page_size),
        page_size,
    )


def iter_records(
    reader: Reader, source: ExportSource, *, page_size: int = PAGE_SIZE
) -> Iterator[ExportRecord]:
    """The source's records one by one (read in pages of `page_size`)."""
    for page in iter_record_pages(reader, source, page_size=page_size):
        yield from page


def resolve_source(
    session: Session, dataset_id: int, snapshot_id: int | None = None, split: Split | None = None
) -> tuple[Dataset, Snapshot | None, ExportSource]:
    """Check what an export asks for: the dataset exists (NotFoundError), the snapshot is the dataset's
    (NotFoundError), a split is asked of a snapshot only (InvalidFieldError), and there is something to export
    (EmptyExportError naming what is missing)."""
    dataset = get_dataset(session, dataset_id)
    if snapshot_id is None:
        if split is not None:
            raise InvalidFieldError(
                "split", "a split exists only in a snapshot: pass a snapshot too", location="query"
            )
        if not has_approved_items(session, dataset_id):
            raise EmptyExportError(
                f"dataset {dataset.name!r} (id {dataset.id}) has no approved items: nothing to export; "
                "approve items in review first"
            )
        return dataset, None, ExportSource(dataset_id)
    snapshot = session.get(Snapshot, snapshot_id)
    if snapshot is None or snapshot.dataset_id != dataset_id:
        raise NotFoundError(f"snapshot {snapshot_id} of dataset {dataset_id} not found")
    if split is not None and snapshot_split_count(snapshot, split) == 0:
        raise EmptyExportError(f"snapshot {snapshot_id} has no {split} items: nothing to export")
    return dataset, snapshot, ExportSource(dataset_id, snapshot_id, split)


def has_approved_items(session: Session, dataset_id: int) -> bool:
    where = item_query.conditions(dataset_id, item_query.ItemQuery(status=ItemStatus.approved))
    return session.scalar(select(Item.id).where(*where).limit(1)) is not None


def snapshot_split_count(snapshot: Snapshot, split: Split | None) -> int:
    return {"train": snapshot.train, "validation": snapshot.validation, None: snapshot.items}[split]


def count_records(session: Session, source: ExportSource) -> int:
    """How many records the source holds (from trigger-kept counts or the snapshot's row: no scan)."""
    if source.snapshot_id is None:
        return item_counts(session, [source.dataset_id])[source.dataset_id][ItemStatus.approved.value]
    snapshot = session.get(Snapshot, source.snapshot_id)
    return 0 if snapshot is None else snapshot_split_count(snapshot, source.split)


# --- what stood behind a snapshot ----------------------------------------------------------------------------


def review_statistics(session: Session, dataset_id: int) -> dict[str, int]:
    """The dataset's review events so far: approvals, rejections, approvals with edits, reviewers who decided,
    all events, and the last event's id (the events behind a snapshot are those up to it)."""
    decisions = [ReviewAction.approve, ReviewAction.reject, ReviewAction.respond, ReviewAction.dispute]

    def count_if(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.max(ReviewEvent.id), 0),
            count_if(ReviewEvent.action == ReviewAction.approve),
            count_if(ReviewEvent.action == ReviewAction.reject),
            count_if(and_(ReviewEvent.action == ReviewAction.approve, ReviewEvent.after.is_not(None))),
            func.count(func.distinct(case((ReviewEvent.action.in_(decisions), ReviewEvent.actor)))),
        ).where(ReviewEvent.dataset_id == dataset_id)
    ).one()
    events, last, approved, rejected, edited, reviewers = (int(v or 0) for v in row)
    return {
        "approved": approved,
        "rejected": rejected,
        "edited": edited,
        "reviewers": reviewers,
        "events": events,
        "last_event_id": last,
    }


def thresholds(session: Session, dataset_id: int, settings: Settings) -> dict[str, Any]:
    """The near-duplicate thresholds items were kept under: the service's, and those jobs set for themselves."""
    by_job: dict[str, dict[str, Any]] = {}
    offset = 0
    while jobs := list_jobs(session, dataset_id, limit=500, offset=offset):
        for job in jobs:
            own = {
                k: job.params[k] for k in ("rouge_threshold", "fuzzy_cutoff") if job.params.get(k) is not None
            }
            if own:
                by_job[str(job.id)] = own
        offset += len(jobs)
    found: dict[str, Any] = {
        "rouge_threshold": settings.rouge_threshold,
        "fuzzy_cutoff": settings.fuzzy_cutoff,
    }
    if by_job:
        found["by_job"] = by_job
    return found


def dataset_summary(session: Session, dataset: Dataset, settings: Settings) -> dict[str, Any]:
    """The dataset's side of a snapshot's summary (the snapshot adds its own languages and models)."""
    counts = item_counts(session, [dataset.id])[dataset.id]
    return {
        "dataset": {"id": dataset.id, "name": dataset.name},
        "settings": dict(dataset.settings or {}),
        "thresholds": thresholds(session, dataset.id, settings),
        "items_by_status": {s.value: counts[s.value] for s in ItemStatus},
        "review": review_statistics(session, dataset.id),
    }


def _grouped(session: Session, snapshot_id: int, column: Any) -> dict[str, int]:
    rows = session.execute(
        select(column, func.count()).where(SnapshotItem.snapshot_id == snapshot_id).group_by(column)
    )
    return {(key if key is not None else "unknown"): int(n) for key, n in rows}


# --- the split ---------------------------------------------------------------------------------------------------


def split_key(seed: int, item_id: int) -> int:
    """An item's place in the draw for validation: the same for the same (seed, item), whatever else changes."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:8], "big")


def validation_count(items: int, fraction: float) -> int:
    """round(items x fraction) (halves up), at least 1 when there are two items or more and the fraction is above
    0, and at most items - 1: training always keeps one."""
    if items < 2 or fraction <= 0:
        return 0
    return min(max(1, int(items * fraction + 0.5)), items - 1)


def choose_validation(seed: int, ids: Iterator[tuple[int, int]], k: int) -> list[int]:
    """The positions of the k (position, item id) pairs with the smallest keys, in position order. Holds k pairs
    in memory, never all of them."""
    if k <= 0:
        for _ in ids:
            pass
        return []
    chosen = heapq.nsmallest(k, ids, key=lambda pair: (split_key(seed, pair[1]), pair[1]))
    return sorted(position for position, _ in chosen)


def _positions(session: Session, snapshot_id: int, size: int) -> Iterator[tuple[int, int]]:
    """(position, item id) of the whole copy, in position order, a window at a time."""

    def fetch(s: Session, start: int) -> list[tuple[int, int]]:
        rows = s.execute(
            select(SnapshotItem.position, SnapshotItem.item_id)
            .where(
                SnapshotItem.snapshot_id == snapshot_id,
                SnapshotItem.position >= start,
                SnapshotItem.position < start + size,
            )
            .order_by(SnapshotItem.position)
        )
        return [(r.position, r.item_id) for r in rows]

    for page in _windows(session, snapshot_id, fetch, size):
        yield from page


# --- making, listing and reading snapshots ---------------------------------------------------------------------


def create_snapshot(
    session: Session,
    dataset_id: int,
    *,
    created_by: str,
    seed: int | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    settings: Settings | None = None,
    page_size: int = PAGE_SIZE,
) -> Snapshot:
    """Snapshot the dataset's approved items now (see the module's docstring); the caller's transaction commits
    it. NotFoundError for an unknown dataset, EmptyExportError when it has no approved items, InvalidFieldError
    for a seed or fraction out of range. `seed` None draws one (recorded on the snapshot)."""
    if not 0 <= validation_fraction < 1:
        raise InvalidFieldError("validation_fraction", "must be at least 0 and below 1")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InvalidFieldError("seed", f"must be between 0 and {MAX_SEED}")
    dataset = get_dataset(session, dataset_id)
    empty = EmptyExportError(
        f"dataset {dataset.name!r} (id {dataset.id}) has no approved items: a snapshot needs at least one; "
        "approve items in review first"
    )
    if not has_approved_items(session, dataset_id):
        raise empty
    seed = secrets.randbelow(2**31) if seed is None else seed
    stem = formats.file_stem(dataset.name)
    snapshot = Snapshot(
        dataset_id=dataset_id,
        content_hash="",
        items=1,  # placeholders within the CHECK constraints, set below
        train=1,
        validation=0,
        seed=seed,
        validation_fraction=validation_fraction,
        summary={},
        training_file_id=None,
        validation_file_id=None,
        created_by=created_by,
    )
    session.add(snapshot)
    session.flush()

    # 1. The copy: one statement, so one moment (READ COMMITTED gives each statement its own snapshot).
    where = item_query.conditions(dataset_id, item_query.ItemQuery(status=ItemStatus.approved))
    numbered = select(
        literal(snapshot.id, Integer),
        func.row_number().over(order_by=Item.id) - 1,
        Item.id,
        literal("train", String),
        Item.instruction,
        Item.input,
        Item.output,
        Item.language,
        Item.model,
    ).where(*where)
    columns = [
        "snapshot_id",
        "position",
        "item_id",
        "split",
        "instruction",
        "input",
        "output",
        "language",
        "model",
    ]
    session.execute(insert(SnapshotItem).from_select(columns, numbered))
    items = session.scalar(select(func.count()).where(SnapshotItem.snapshot_id == snapshot.id)) or 0
    if items == 0:  # every approved item was reopened between the check and the copy
        raise empty
    snapshot.items = items
    session.flush()  # the readers below read the copy's size from the row

    # 2. The split.
    k = validation_count(items, validation_fraction)
    chosen = choose_validation(seed, _positions(session, snapshot.id, page_size * 5), k)
    for start in range(0, len(chosen), _UPDATE_BATCH):
        session.execute(
            update(SnapshotItem)
            .where(
                SnapshotItem.snapshot_id == snapshot.id,
                SnapshotItem.position.in_(chosen[start : start + _UPDATE_BATCH]),
            )
            .values(split="validation")
            .execution_options(synchronize_session=False)
        )

    # 3. The content hash.
    digest = hashlib.sha256()
    for record in iter_records(session, ExportSource(dataset_id, snapshot.id), page_size=page_size):
        digest.update(formats.canonical_line(record))

    # 4. The files.
    def split_file(split: Split) -> StoredFile:
        records = iter_records(session, ExportSource(dataset_id, snapshot.id, split), page_size=page_size)
        return store_file(
            session,
            formats.encode("openai", records),
            filename=f"{stem}-snapshot-{snapshot.id}-{split}.jsonl",
            purpose=PURPOSE,
            created_by=created_by,
            check_jsonl=True,
        )

    training = split_file("train")
    validation = split_file("validation") if k else None
    snapshot.train, snapshot.validation = items - k, k
    snapshot.content_hash = digest.hexdigest()
    snapshot.training_file_id = training.id
    snapshot.validation_file_id = validation.id if validation is not None else None
    snapshot.summary = {
        **dataset_summary(session, dataset, settings or get_settings()),
        "languages": _grouped(session, snapshot.id, SnapshotItem.language),
        "models": _grouped(session, snapshot.id, SnapshotItem.model),
    }
    session.flush()
    return snapshot


def get_snapshot(session: Session, snapshot_id: int) -> Snapshot:
    snapshot = session.get(Snapshot, snapshot_id)
    if snapshot is None:
        raise NotFoundError(f"snapshot {snapshot_id} not found")
    return snapshot


def list_snapshots(
    session: Session, dataset_id: int, *, limit: int = 20, before: int | None = None
) -> list[Snapshot]:
    """The dataset's snapshots, newest first; `before` continues after the last id of a previous page."""
    get_dataset(session, dataset_id)
    query = select(Snapshot).where(Snapshot.dataset_id == dataset_id)
    if before is not None:
        query = query.where(Snapshot.id < before)
    return list(session.scalars(query.order_by(Snapshot.id.desc()).limit(limit)))


def file_public_ids(session: Session, snapshots: Sequence[Snapshot]) -> dict[int, str]:
    """public_id of every file the snapshots point at, by file id (one query)."""
    ids = {s.training_file_id for s in snapshots} | {s.validation_file_id for s in snapshots}
    ids.discard(None)
    if not ids:
        return {}
    return dict(
        session.execute(select(StoredFile.id, StoredFile.public_id).where(StoredFile.id.in_(ids))).all()
    )
