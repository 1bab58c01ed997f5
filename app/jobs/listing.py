"""One list over every kind of job (generation and fine-tuning), newest first, in keyset pages: what the jobs
page, `sprout jobs` and `GET /v1/jobs` show.

The order is (created_at, kind, id), descending; a cursor holds the last row's key, so each kind's query asks
only for rows after it (its (status, created_at) index serves the usual filters: active jobs, one status) and
the page is the merge of at most limit + 1 rows per kind. Like the queue (queue.py), this module reads every
table with the LeasedJob columns; a fine-tuning job's progress is its latest metrics event (step of
total_steps), read in the same statement through the (job_id, id) index of the events.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select
from sqlalchemy.orm import Session, defer

from app.core.errors import InvalidFieldError
from app.datasets.models import Dataset
from app.finetune.models import FineTuneEvent, FineTuneJob
from app.finetune.schemas import api_status
from app.generation.models import GenerationJob
from app.jobs.models import FINAL_STATUSES, JobStatus
from app.jobs.schemas import (
    JOB_KINDS,
    DatasetRef,
    GenerationCounters,
    JobRow,
    Progress,
    Tokens,
)

MAX_LIMIT = 200
MAX_ID = 2**63 - 1
ACTIVE_STATUSES = frozenset({JobStatus.queued, JobStatus.running})
# Among jobs created at the same instant, generation jobs come first (descending order of this rank).
_RANK: dict[str, int] = {"fine_tune": 0, "generation": 1}


@dataclass(frozen=True)
class JobFilter:
    kinds: frozenset[str] = frozenset(JOB_KINDS)
    statuses: frozenset[JobStatus] | None = None  # None: any
    dataset_id: int | None = None
    active: bool | None = None  # True: queued or running; False: finished (succeeded, failed, cancelled)

    def wanted_statuses(self) -> frozenset[JobStatus] | None:
        """The statuses both `statuses` and `active` allow (None: any; empty: nothing can match)."""
        wanted = self.statuses
        if self.active is not None:
            side = ACTIVE_STATUSES if self.active else FINAL_STATUSES
            wanted = side if wanted is None else wanted & side
        return wanted


@dataclass(frozen=True)
class Key:
    """Where a row stands in the listing's order."""

    created_at: datetime
    kind: str
    id: int

    def sort_key(self) -> tuple[datetime, int, int]:
        return (self.created_at, _RANK[self.kind], self.id)


def parse_statuses(values: Iterable[str] | None) -> frozenset[JobStatus] | None:
    """`status` as given: repeated, comma-separated, or both. Unknown names are a 422 naming the known ones."""
    names = [part.strip() for value in values or () for part in value.split(",") if part.strip()]
    if not names:
        return None
    known = {s.value: s for s in JobStatus}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidFieldError(
            "status", f"unknown status {unknown[0]!r} (known: {', '.join(known)})", location="query"
        )
    return frozenset(known[n] for n in names)


def parse_kinds(value: str | None) -> frozenset[str]:
    if value is None or not value.strip():
        return frozenset(JOB_KINDS)
    kinds = {part.strip() for part in value.split(",") if part.strip()}
    unknown = sorted(kinds - set(JOB_KINDS))
    if unknown:
        raise InvalidFieldError(
            "kind", f"unknown kind {unknown[0]!r} (known: {', '.join(JOB_KINDS)})", location="query"
        )
    return frozenset(kinds)


def encode_cursor(key: Key) -> str:
    raw = json.dumps(
        {"c": key.created_at.isoformat(), "k": key.kind, "i": key.id}, separators=(",", ":")
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        created = datetime.fromisoformat(data["c"])
        kind, job_id = data["k"], data["i"]
        valid = (
            created.tzinfo is not None
            and kind in _RANK
            and isinstance(job_id, int)
            and not isinstance(job_id, bool)
            and 0 <= job_id <= MAX_ID
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        valid = False
    if not valid:
        raise InvalidFieldError(
            "after", "not a cursor of this listing; start again without one", location="query"
        )
    return Key(created, kind, job_id)


def _after(model: type[GenerationJob] | type[FineTuneJob], kind: str, key: Key) -> ColumnElement[bool]:
    """Rows of `model` that come after `key` in the descending order (created_at, rank, id)."""
    rank, cursor_rank = _RANK[kind], _RANK[key.kind]
    if rank < cursor_rank:  # at the same instant, this kind comes after the cursor's
        return model.created_at <= key.created_at
    if rank > cursor_rank:
        return model.created_at < key.created_at
    return or_(model.created_at < key.created_at, and_(model.created_at == key.created_at, model.id < key.id))


def _conditions(
    model: type[GenerationJob] | type[FineTuneJob], kind: str, where: JobFilter, after: Key | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    statuses = where.wanted_statuses()
    if statuses is not None:
        conditions.append(model.status.in_(sorted(statuses)) if statuses else false())
    if where.dataset_id is not None:
        conditions.append(model.dataset_id == where.dataset_id)
    if after is not None:
        conditions.append(_after(model, kind, after))
    return conditions


def _dataset(dataset_id: int | None, name: str | None) -> DatasetRef | None:
    return DatasetRef(id=dataset_id, name=name) if dataset_id is not None and name is not None else None


def _queue_fields(job: GenerationJob | FineTuneJob, dataset_name: str | None, url: str) -> dict[str, Any]:
    """What every kind of job has (the LeasedJob columns), its dataset, and its routes."""
    return {
        "id": job.id,
        "dataset": _dataset(job.dataset_id, dataset_name),
        "status": job.status,
        "cancel_requested": job.cancel_requested,
        "priority": job.priority,
        "attempt": job.attempt,
        "worker_id": job.worker_id,
        "message": job.message,
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "not_before": job.not_before,
        "url": url,
        "cancel_url": None if job.status in FINAL_STATUSES else f"{url}/cancel",
    }


def generation_row(job: GenerationJob, dataset_name: str | None) -> JobRow:
    filtered = sum(int(n) for n in (job.filtered or {}).values())
    return JobRow(
        kind="generation",
        **_queue_fields(job, dataset_name, f"/v1/generations/{job.id}"),
        backend=job.backend,
        model=(job.params or {}).get("model"),
        progress=Progress.of(job.accepted, job.requested),
        counters=GenerationCounters(
            requests=job.requests,
            prompts=job.prompts,
            raw=job.raw,
            parsed=job.parsed,
            filtered=filtered,
            duplicates=job.duplicates,
            accepted=job.accepted,
            errors=job.errors,
        ),
        tokens=Tokens(
            prompt=job.prompt_tokens,
            completion=job.completion_tokens,
            total=job.prompt_tokens + job.completion_tokens,
        ),
        busy_seconds=job.busy_seconds,
    )


def _number(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def fine_tune_progress(job: FineTuneJob, metrics: dict[str, Any] | None) -> Progress | None:
    """Steps done of the total, from the job's latest metrics event; None until a trainer reported one with
    its total. A job that succeeded did every step."""
    if not isinstance(metrics, dict):
        return None
    step, total = _number(metrics.get("step")), _number(metrics.get("total_steps"))
    if total is None or total <= 0:
        return None
    if job.status == JobStatus.succeeded:
        step = total
    return Progress.of(step or 0, total)


def fine_tune_row(job: FineTuneJob, dataset_name: str | None, metrics: dict[str, Any] | None) -> JobRow:
    return JobRow(
        kind="fine_tune",
        **_queue_fields(job, dataset_name, f"/v1/fine_tuning/jobs/{job.public_id}"),
        public_id=job.public_id,
        stage=api_status(job),
        model=job.model,
        fine_tuned_model=job.fine_tuned_model,
        progress=fine_tune_progress(job, metrics),
        tokens=Tokens(trained=job.trained_tokens, total=job.trained_tokens or 0),
    )


def _generation_rows(session: Session, where: JobFilter, after: Key | None, limit: int) -> list[JobRow]:
    query = (
        select(GenerationJob, Dataset.name)
        .outerjoin(Dataset, Dataset.id == GenerationJob.dataset_id)
        .where(*_conditions(GenerationJob, "generation", where, after))
        .order_by(GenerationJob.created_at.desc(), GenerationJob.id.desc())
        .limit(limit)
    )
    return [generation_row(job, name) for job, name in session.execute(query)]


def _fine_tune_rows(session: Session, where: JobFilter, after: Key | None, limit: int) -> list[JobRow]:
    latest_metrics = (
        select(FineTuneEvent.data)
        .where(FineTuneEvent.job_id == FineTuneJob.id, FineTuneEvent.type == "metrics")
        .order_by(FineTuneEvent.id.desc())
        .limit(1)
        .correlate(FineTuneJob)
        .scalar_subquery()
    )
    query = (
        select(FineTuneJob, Dataset.name, latest_metrics)
        .outerjoin(Dataset, Dataset.id == FineTuneJob.dataset_id)
        .where(*_conditions(FineTuneJob, "fine_tune", where, after))
        .options(defer(FineTuneJob.evaluation), defer(FineTuneJob.hyperparameters), defer(FineTuneJob.meta))
        .order_by(FineTuneJob.created_at.desc(), FineTuneJob.id.desc())
        .limit(limit)
    )
    return [fine_tune_row(job, name, metrics) for job, name, metrics in session.execute(query)]


def key_of(row: JobRow) -> Key:
    return Key(row.created_at, row.kind, row.id)


def list_jobs(
    session: Session, where: JobFilter, *, after: str | None = None, limit: int = 50
) -> tuple[list[JobRow], str | None]:
    """One page of jobs, newest first, and the cursor of the next page (None on the last one)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidFieldError("limit", f"must be between 1 and {MAX_LIMIT}", location="query")
    key = decode_cursor(after) if after else None
    rows: list[JobRow] = []
    if "generation" in where.kinds:
        rows += _generation_rows(session, where, key, limit + 1)
    if "fine_tune" in where.kinds:
        rows += _fine_tune_rows(session, where, key, limit + 1)
    rows.sort(key=lambda r: key_of(r).sort_key(), reverse=True)
    page = rows[:limit]
    return page, (encode_cursor(key_of(page[-1])) if len(rows) > limit else None)
