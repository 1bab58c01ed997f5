"""Tables of the review room: who holds which item (claims), what each reviewer answered (responses), and the
append-only log of every transition (events)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, string_enum, utcnow


class Verdict(enum.StrEnum):
    approve = "approve"
    reject = "reject"


class ReviewAction(enum.StrEnum):
    """What an event records. Values are stored: never rename one."""

    approve = "approve"  # the item became approved (a reviewer, the k-th agreeing response, or an admin)
    reject = "reject"  # the item became rejected
    respond = "respond"  # one reviewer's response to an item that needs k; the item stays pending
    dispute = "dispute"  # k responses disagree: the item waits for an admin
    restore = "restore"  # a filtered item goes back to pending
    reopen = "reopen"  # an admin sends a decided item back to pending
    undo = "undo"  # a reviewer takes back their own last decision


class ReviewClaim(Base):
    """One reviewer holds one item until `lease_until` (database time). Several reviewers may hold the same
    item when the dataset asks for k reviews of each; one reviewer holds it at most once."""

    __tablename__ = "review_claim"
    __table_args__ = (
        UniqueConstraint("item_id", "user_id", name="uq_review_claim_item_user"),
        Index("ix_review_claim_user", "user_id", "dataset_id", "lease_until"),
        Index("ix_review_claim_item", "item_id", "lease_until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime]


class ReviewResponse(Base):
    """One reviewer's answer to one item (with k = 1, the answer is the decision)."""

    __tablename__ = "review_response"
    __table_args__ = (
        UniqueConstraint("item_id", "user_id", name="uq_review_response_item_user"),
        Index("ix_review_response_dataset_user", "dataset_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    verdict: Mapped[Verdict] = mapped_column(string_enum(Verdict, "verdict"))
    reason: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    # The fields this reviewer changed, {"instruction": ..., "output": ...}; NULL when they changed nothing.
    edits: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewEvent(Base):
    """An append-only record of one transition: who, when, from and to which status, why, and the text before
    and after when it changed. Nothing updates or deletes these rows."""

    __tablename__ = "review_event"
    __table_args__ = (
        Index("ix_review_event_item", "item_id", "id"),
        Index("ix_review_event_dataset_created", "dataset_id", "created_at"),
        Index("ix_review_event_actor", "actor_id", "dataset_id", "id"),
        Index("ix_review_event_undoes", "undoes_id"),
        CheckConstraint("version_after >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(64))  # the name, readable even if the account goes
    action: Mapped[ReviewAction] = mapped_column(string_enum(ReviewAction, "action"))
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    # {"instruction", "input", "output"} before and after, only when the text changed; SQL NULL otherwise (not
    # JSON null: progress counts edits with IS NOT NULL).
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    version_after: Mapped[int] = mapped_column(Integer)  # the item's version this event left it at
    undoes_id: Mapped[int | None] = mapped_column(ForeignKey("review_event.id", ondelete="SET NULL"))
    bulk_id: Mapped[str | None] = mapped_column(String(32))  # events of one bulk action share it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewTally(Base):
    """Decisions per dataset, reviewer and kind, net of undos: what the progress page shows, kept by a trigger on
    review_event (migration 0003) so it costs the same however many decisions were made. An undo counts under
    action "undo" and takes one off the decision it undoes."""

    __tablename__ = "review_tally"

    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True)
    actor: Mapped[str] = mapped_column(String(64), primary_key=True)
    action: Mapped[str] = mapped_column(String(16), primary_key=True)
    bulk: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    edited: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class ReviewHourly(Base):
    """Reviewers' decisions per dataset and hour (UTC, "YYYY-MM-DD HH:00"), kept by the same trigger."""

    __tablename__ = "review_hourly"

    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[str] = mapped_column(String(16), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)  # as item_count's: summed when read
    n: Mapped[int] = mapped_column(BigInteger)
