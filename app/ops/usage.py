"""Usage kept in the database: what generation jobs cost (tokens, requests, errors, time) and what they yielded
(items accepted, per item parsed and per 1K completion tokens), per job, summed per dataset or per backend.

The figures are the jobs' own counters (`generation_job`), written in the same fenced transactions as the items
they count, so usage survives restarts and agrees with the items exactly; a running job's figures grow as it
runs (its time is added at every lease renewal). One GROUP BY query per question; jobs come in keyset pages.
Filters: dataset, backend, and when the job was queued (`since` <= created_at < `until`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.datasets.models import Dataset
from app.generation.models import GenerationJob


class UsageBy(enum.StrEnum):
    dataset = "dataset"
    backend = "backend"
    job = "job"


@dataclass(frozen=True)
class UsageFilter:
    dataset_id: int | None = None
    backend: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list[Any]:
        conditions: list[Any] = []
        if self.dataset_id is not None:
            conditions.append(GenerationJob.dataset_id == self.dataset_id)
        if self.backend is not None:
            conditions.append(GenerationJob.backend == self.backend)
        if self.since is not None:
            conditions.append(GenerationJob.created_at >= as_utc(self.since))
        if self.until is not None:
            conditions.append(GenerationJob.created_at < as_utc(self.until))
        return conditions


def as_utc(moment: datetime) -> datetime:
    """A time without a zone is read as UTC (every stored time is)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Usage:
    """Sums over some jobs (or one job's own figures), and what they yielded."""

    jobs: int = 0
    requests: int = 0
    prompts: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    busy_seconds: float = 0.0
    parsed: int = 0
    duplicates: int = 0
    accepted: int = 0
    # What the sums are of: a dataset (id and name), a backend, or one job (with its status and times).
    dataset_id: int | None = None
    dataset: str | None = None
    backend: str | None = None
    job_id: int | None = None
    status: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted items per parsed item (None before anything parsed)."""
        return self.accepted / self.parsed if self.parsed else None

    @property
    def accepted_per_1k_completion_tokens(self) -> float | None:
        return 1000.0 * self.accepted / self.completion_tokens if self.completion_tokens else None

    def __add__(self, other: Usage) -> Usage:
        return replace(
            self,
            **{
                name: getattr(self, name) + getattr(other, name)
                for name in (
                    "jobs",
                    "requests",
                    "prompts",
                    "errors",
                    "prompt_tokens",
                    "completion_tokens",
                    "busy_seconds",
                    "parsed",
                    "duplicates",
                    "accepted",
                )
            },
        )


_SUMMED = (
    GenerationJob.requests,
    GenerationJob.prompts,
    GenerationJob.errors,
    GenerationJob.prompt_tokens,
    GenerationJob.completion_tokens,
    GenerationJob.busy_seconds,
    GenerationJob.parsed,
    GenerationJob.duplicates,
    GenerationJob.accepted,
)


def _sums() -> list[Any]:
    return [func.count(GenerationJob.id), *(func.coalesce(func.sum(c), 0) for c in _SUMMED)]


def _figures(values: Any) -> dict[str, Any]:
    jobs, requests, prompts, errors, prompt_tokens, completion_tokens, busy, parsed, duplicates, accepted = (
        values
    )
    return {
        "jobs": int(jobs),
        "requests": int(requests),
        "prompts": int(prompts),
        "errors": int(errors),
        "prompt_tokens": int(prompt_tokens),  # PostgreSQL sums bigints as numeric
        "completion_tokens": int(completion_tokens),
        "busy_seconds": float(busy),
        "parsed": int(parsed),
        "duplicates": int(duplicates),
        "accepted": int(accepted),
    }


def total_usage(session: Session, where: UsageFilter) -> Usage:
    row = session.execute(select(*_sums()).where(*where.where())).one()
    return Usage(**_figures(row))


def usage_by_dataset(session: Session, where: UsageFilter) -> list[Usage]:
    """One row per dataset that has matching jobs, the largest consumer of completion tokens first."""
    query: Select[Any] = (
        select(GenerationJob.dataset_id, Dataset.name, *_sums())
        .join(Dataset, Dataset.id == GenerationJob.dataset_id)
        .where(*where.where())
        .group_by(GenerationJob.dataset_id, Dataset.name)
    )
    rows = [Usage(dataset_id=r[0], dataset=r[1], **_figures(r[2:])) for r in session.execute(query)]
    return sorted(rows, key=lambda u: (-u.completion_tokens, u.dataset or ""))


def usage_by_backend(session: Session, where: UsageFilter) -> list[Usage]:
    query = select(GenerationJob.backend, *_sums()).where(*where.where()).group_by(GenerationJob.backend)
    rows = [Usage(backend=r[0], **_figures(r[1:])) for r in session.execute(query)]
    return sorted(rows, key=lambda u: (-u.completion_tokens, u.backend or ""))


def usage_by_job(
    session: Session, where: UsageFilter, *, limit: int, before: int | None = None
) -> tuple[list[Usage], int | None]:
    """A page of jobs, the newest first; the id to pass as `before` for the next page (None on the last)."""
    query = (
        select(GenerationJob, Dataset.name)
        .join(Dataset, Dataset.id == GenerationJob.dataset_id)
        .where(*where.where())
        .order_by(GenerationJob.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        query = query.where(GenerationJob.id < before)
    found = session.execute(query).all()
    rows = [
        Usage(
            jobs=1,
            requests=job.requests,
            prompts=job.prompts,
            errors=job.errors,
            prompt_tokens=job.prompt_tokens,
            completion_tokens=job.completion_tokens,
            busy_seconds=job.busy_seconds,
            parsed=job.parsed,
            duplicates=job.duplicates,
            accepted=job.accepted,
            dataset_id=job.dataset_id,
            dataset=name,
            backend=job.backend,
            job_id=job.id,
            status=job.status.value,
            created_at=job.created_at,
            finished_at=job.finished_at,
        )
        for job, name in found[:limit]
    ]
    return rows, (rows[-1].job_id if len(found) > limit else None)


def usage_report(
    session: Session, by: UsageBy, where: UsageFilter, *, limit: int = 100, before: int | None = None
) -> tuple[Usage, list[Usage], int | None]:
    """(the sums over every matching job, the rows asked for, the next page's `before` for by=job)."""
    if by is UsageBy.job:
        rows, next_before = usage_by_job(session, where, limit=limit, before=before)
        return total_usage(session, where), rows, next_before
    rows = usage_by_dataset(session, where) if by is UsageBy.dataset else usage_by_backend(session, where)
    return sum(rows, Usage()), rows, None
