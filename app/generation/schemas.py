"""Response bodies of the generation room (the request body is params.GenerationParams)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.generation.models import GenerationJob, GenerationReply, Item, ItemImport, ItemStatus
from app.jobs.models import JobStatus


class JobCounters(BaseModel):
    requested: int = Field(description="Items to accept (the job's count).")
    requests: int = Field(description="Requests answered or failed.")
    prompts: int = Field(description="Prompts those requests carried.")
    raw: int = Field(description="Chunks of model output (parsed items + unparsed chunks).")
    parsed: int
    unparsed: int = Field(
        description="Chunks of model output that did not parse into an item (raw - parsed)."
    )
    filtered: dict[str, int] = Field(description="Items dropped by a heuristic filter, by reason.")
    duplicates: int = Field(description="Items dropped as near-duplicates of a seed or an earlier item.")
    accepted: int = Field(description="Items stored as pending (waiting for review).")
    errors: int = Field(description="Requests that failed after retries or came back without text.")
    prompt_tokens: int
    completion_tokens: int


class JobOut(BaseModel):
    id: int
    object: Literal["generation_job"] = "generation_job"
    dataset_id: int
    status: JobStatus
    backend: str
    seed: int
    cancel_requested: bool
    params: dict[str, Any]
    counters: JobCounters
    message: str | None
    error: str | None
    last_error: str | None
    attempt: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: GenerationJob) -> JobOut:
        return cls(
            id=job.id,
            dataset_id=job.dataset_id,
            status=job.status,
            backend=job.backend,
            seed=job.seed,
            cancel_requested=job.cancel_requested,
            params=job.params,
            counters=JobCounters(
                requested=job.requested,
                requests=job.requests,
                prompts=job.prompts,
                raw=job.raw,
                parsed=job.parsed,
                unparsed=job.raw - job.parsed,
                filtered=job.filtered or {},
                duplicates=job.duplicates,
                accepted=job.accepted,
                errors=job.errors,
                prompt_tokens=job.prompt_tokens,
                completion_tokens=job.completion_tokens,
            ),
            message=job.message,
            error=job.error,
            last_error=job.last_error,
            attempt=job.attempt,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class ReplyChoiceOut(BaseModel):
    prompt_index: int
    text: str | None = Field(description="The raw text, clipped to the service's reply_log_chars.")
    truncated: bool = False
    finish_reason: str | None
    items: int = Field(description="Items parsed from this text.")
    unparsed: int = Field(description="Chunks of this text that did not parse.")


class ReplyOut(BaseModel):
    id: int
    job_id: int
    request_no: int
    attempt: int
    prompts: int
    choices: list[ReplyChoiceOut]
    error: str | None
    raw: int
    parsed: int
    accepted: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    created_at: datetime

    @classmethod
    def of(cls, reply: GenerationReply) -> ReplyOut:
        return cls.model_validate(reply, from_attributes=True)


class Neighbour(BaseModel):
    kind: Literal["seed", "item"] | None
    id: int | None
    rouge_l: float | None


class ItemOut(BaseModel):
    id: int
    dataset_id: int
    job_id: int | None
    reply_id: int | None
    import_id: int | None
    instruction: str
    input: str
    output: str
    status: ItemStatus
    filter_reason: str | None
    duplicate_signal: str | None
    nearest: Neighbour | None
    fuzzy_score: float | None
    semantic_score: float | None
    language: str = Field(description="zh, ja, ko, latin, mixed or other (by the instruction's script).")
    original: dict[str, str] | None = Field(description="The text as generated, once a reviewer edited it.")
    labels: dict[str, Any]
    model: str | None
    version: int = Field(description="Send it back with a review decision; a stale one is a 409.")
    created_at: datetime
    decided_at: datetime | None

    @classmethod
    def of(cls, item: Item) -> ItemOut:
        nearest = None
        if item.nearest_kind is not None:
            nearest = Neighbour(kind=item.nearest_kind, id=item.nearest_id, rouge_l=item.nearest_rouge_l)  # type: ignore[arg-type]
        return cls(
            id=item.id,
            dataset_id=item.dataset_id,
            job_id=item.job_id,
            reply_id=item.reply_id,
            import_id=item.import_id,
            instruction=item.instruction,
            input=item.input,
            output=item.output,
            status=item.status,
            filter_reason=item.filter_reason,
            duplicate_signal=item.duplicate_signal,
            nearest=nearest,
            fuzzy_score=item.fuzzy_score,
            semantic_score=item.semantic_score,
            language=item.language,
            original=item.original,
            labels=item.labels,
            model=item.model,
            version=item.version,
            created_at=item.created_at,
            decided_at=item.decided_at,
        )


class PreviewCandidateOut(BaseModel):
    instruction: str
    input: str
    output: str
    verdict: Literal["accepted", "filtered", "near_duplicate"]
    filter_reason: str | None
    duplicate_signal: str | None
    nearest: Neighbour | None
    nearest_text: str | None = Field(description="The text of the nearest neighbour, when there is one.")


class PreviewOut(BaseModel):
    """A dry run: one request rendered, sent, parsed, filtered and checked against the index; nothing stored."""

    backend: str
    mode: str
    request: dict[str, Any] = Field(description="What was sent: the prompt(s) or messages, and the sampling.")
    choices: list[ReplyChoiceOut]
    error: str | None
    candidates: list[PreviewCandidateOut]
    latency_ms: float


class ImportOut(BaseModel):
    """A file of instruction data brought into a dataset, and what became of its records."""

    id: int
    object: Literal["item_import"] = "item_import"
    dataset_id: int
    filename: str
    format: str
    status: str
    created_by: str
    records: int
    done: int = Field(description="Records stored so far (all of them once the import succeeded).")
    accepted: int = Field(description="Stored as pending: waiting for review.")
    duplicates: int = Field(
        description="Dropped as near-duplicates of a seed, an item, or an earlier record."
    )
    filtered: dict[str, int] = Field(description="Dropped by a heuristic filter, by reason.")
    error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row: ItemImport) -> ImportOut:
        return cls(
            id=row.id,
            dataset_id=row.dataset_id,
            filename=row.filename,
            format=row.format,
            status=row.status.value,
            created_by=row.created_by,
            records=row.records,
            done=row.done,
            accepted=row.accepted,
            duplicates=row.duplicates,
            filtered=row.filtered or {},
            error=row.error,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )
