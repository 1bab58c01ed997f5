"""Request and response bodies of the review room."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.generation.item_query import ItemQuery, Sort
from app.generation.models import DuplicateSignal, ItemStatus
from app.generation.schemas import ItemOut
from app.reports.language import Language
from app.review.bulk import BulkAction
from app.review.decisions import MAX_FIELD_CHARS
from app.review.models import ReviewEvent, ReviewResponse, Verdict
from app.review.settings import ReviewSettings


class QueueFilters(BaseModel):
    """Which items: the same filters as the item lists."""

    model_config = ConfigDict(extra="forbid")

    status: ItemStatus | None = None
    job_id: int | None = None
    import_id: int | None = None
    language: Language | None = None
    filter_reason: str | None = Field(default=None, max_length=64)
    duplicate_signal: DuplicateSignal | None = None
    q: str | None = Field(
        default=None, max_length=200, description="Text in the instruction, input or output."
    )

    def query(self) -> ItemQuery:
        return ItemQuery(
            status=self.status,
            job_id=self.job_id,
            import_id=self.import_id,
            language=self.language,
            filter_reason=self.filter_reason,
            duplicate_signal=self.duplicate_signal,
            text=self.q or None,
        )


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=10, ge=1, le=100, description="Items to hold (those already held count).")
    sort: Sort = Field(
        default="doubtful", description="doubtful: nearest neighbour's ROUGE-L, highest first."
    )
    filters: QueueFilters = Field(default_factory=QueueFilters)


class RenewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_ids: list[int] | None = Field(default=None, max_length=1000, description="Default: every item held.")


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_ids: list[int] = Field(min_length=1, max_length=1000)


class Edits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instruction: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    input: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    output: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)

    def changed(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Verdict
    version: int = Field(ge=1, description="The item's version as you saw it (a stale one is a 409).")
    reason: str | None = Field(
        default=None, max_length=64, description="Rejections: one of the dataset's reasons."
    )
    note: str | None = Field(default=None, max_length=2000, description="Free text.")
    edits: Edits | None = Field(default=None, description="Edit-and-approve: the fields you changed.")


class TransitionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    note: str | None = Field(default=None, max_length=2000)


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: BulkAction
    filters: QueueFilters = Field(default_factory=QueueFilters)
    reason: str | None = Field(
        default=None, max_length=64, description="Rejections: one of the dataset's reasons."
    )
    note: str | None = Field(default=None, max_length=2000)
    dry_run: bool = Field(default=False, description="Only count what the action would change.")


class DiffSegmentOut(BaseModel):
    op: Literal["equal", "delete", "insert"]
    text: str


class NeighbourOut(BaseModel):
    kind: Literal["seed", "item"]
    id: int
    rouge_l: float | None
    text: str = Field(description="The neighbour's instruction.")
    diff: list[DiffSegmentOut] = Field(description="From the neighbour's instruction to this item's.")


class ReviewItemOut(ItemOut):
    neighbour: NeighbourOut | None


class ClaimOut(BaseModel):
    items: list[ReviewItemOut]
    lease_until: datetime | None
    lease_seconds: float
    reject_reasons: list[str]


class RenewOut(BaseModel):
    item_ids: list[int] = Field(description="Items still held.")
    lease_until: datetime | None


class DecisionOut(BaseModel):
    item: ReviewItemOut
    event_id: int
    decided: bool = Field(description="The item left the queue (approved, rejected or disputed).")


class BulkOut(BaseModel):
    bulk_id: str | None
    matched: int
    changed: int
    dry_run: bool


class EventOut(BaseModel):
    id: int
    item_id: int
    actor: str
    action: str
    from_status: str
    to_status: str
    reason: str | None
    note: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    version_after: int
    undoes_id: int | None
    bulk_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, event: ReviewEvent) -> EventOut:
        return cls.model_validate(event, from_attributes=True)


class ResponseOut(BaseModel):
    user: str
    verdict: Verdict
    reason: str | None
    note: str | None
    edits: dict[str, str] | None
    created_at: datetime

    @classmethod
    def of(cls, response: ReviewResponse, user: str) -> ResponseOut:
        return cls(
            user=user,
            verdict=response.verdict,
            reason=response.reason,
            note=response.note,
            edits=response.edits,
            created_at=response.created_at,
        )


class ReviewerOut(BaseModel):
    user: str
    decisions: int
    approved: int
    rejected: int
    edited: int
    answered: int
    disputed: int
    undone: int


class PairKappaOut(BaseModel):
    reviewer_a: str
    reviewer_b: str
    items: int
    kappa: float | None
    observed: float


class AgreementOut(BaseModel):
    items: int = Field(description="Items answered by two reviewers or more.")
    agreeing_items: int
    agreement_share: float | None
    pairs: list[PairKappaOut] = Field(description="Cohen's kappa of each pair over the items both answered.")
    mean_pairwise_kappa: float | None
    fleiss_kappa: float | None = Field(description="Over items with the same number (3 or more) of answers.")
    fleiss_items: int
    fleiss_raters: int | None


class ProgressOut(BaseModel):
    dataset_id: int
    by_status: dict[str, int]
    by_reviewer: list[ReviewerOut]
    per_hour: list[tuple[str, int]] = Field(description="Decisions per hour (UTC), the last 24 hours.")
    last_hour: int
    bulk: dict[str, int]
    settings: ReviewSettings
    agreement: AgreementOut
