"""The production generation engine: named backends, raw replies, error counters, CHECK constraints.

- generation_job: backend (a configured name), seed (per-request sampling derives from it), requests, errors,
  last_error; token counters become 64-bit.
- generation_reply: one row per request (its raw texts, clipped, or its error).
- item.reply_id: which reply an item came from; an index on (dataset_id, id) for the accept step's catch-up.
- CHECK constraints on every status, counter and score (until now the schema documented them but had none).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_STATUSES = "('queued', 'running', 'succeeded', 'failed', 'cancelled')"
ITEM_STATUSES = "('pending', 'approved', 'rejected', 'filtered')"

JOB_CHECKS = {
    "status": f"status IN {JOB_STATUSES}",
    "counters_not_negative": (
        "requested >= 1 AND requests >= 0 AND prompts >= 0 AND raw >= 0 AND parsed >= 0 AND duplicates >= 0 "
        "AND accepted >= 0 AND errors >= 0 AND prompt_tokens >= 0 AND completion_tokens >= 0 AND attempt >= 0"
    ),
    "parsed_within_raw": "parsed <= raw",
    "kept_within_parsed": "duplicates + accepted <= parsed",
    "running_is_leased": "status <> 'running' OR (worker_id IS NOT NULL AND lease_until IS NOT NULL)",
}
ITEM_CHECKS = {
    "status": f"status IN {ITEM_STATUSES}",
    "filtered_has_reason": "(status = 'filtered') = (filter_reason IS NOT NULL)",
    "duplicate_signal_valid": (
        "duplicate_signal IS NULL OR (filter_reason = 'near_duplicate' AND duplicate_signal IN "
        "('exact', 'rouge_l', 'fuzzy', 'semantic'))"
    ),
    "nearest_kind_valid": "nearest_kind IS NULL OR nearest_kind IN ('seed', 'item')",
    "rouge_l_range": "nearest_rouge_l IS NULL OR (nearest_rouge_l >= 0 AND nearest_rouge_l <= 1)",
    "fuzzy_range": "fuzzy_score IS NULL OR (fuzzy_score >= 0 AND fuzzy_score <= 100)",
    "semantic_range": "semantic_score IS NULL OR (semantic_score >= -1.0001 AND semantic_score <= 1.0001)",
    "version_positive": "version >= 1",
    "instruction_not_empty": "length(instruction) > 0",
}


def upgrade() -> None:
    with op.batch_alter_table("generation_job") as batch:
        batch.add_column(sa.Column("backend", sa.String(length=64), nullable=False, server_default="local"))
        batch.add_column(sa.Column("seed", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("requests", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("errors", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.alter_column("prompt_tokens", type_=sa.BigInteger(), existing_nullable=False)
        batch.alter_column("completion_tokens", type_=sa.BigInteger(), existing_nullable=False)
        for name, condition in JOB_CHECKS.items():
            batch.create_check_constraint(name, condition)

    op.create_table(
        "generation_reply",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("request_no", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("prompts", sa.Integer(), nullable=False),
        sa.Column("choices", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("raw", sa.Integer(), nullable=False),
        sa.Column("parsed", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("request_no >= 0 AND prompts >= 1 AND attempt >= 1", name="numbers_valid"),
        sa.CheckConstraint(
            "raw >= 0 AND parsed >= 0 AND accepted >= 0 AND accepted <= parsed AND parsed <= raw",
            name="counts_valid",
        ),
        sa.ForeignKeyConstraint(["job_id"], ["generation_job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "request_no", name="uq_generation_reply_request"),
    )

    with op.batch_alter_table("item") as batch:
        batch.add_column(sa.Column("reply_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_item_reply_id_generation_reply"), "generation_reply", ["reply_id"], ["id"], ondelete="SET NULL"
        )
        for name, condition in ITEM_CHECKS.items():
            batch.create_check_constraint(name, condition)
        # The accept step's catch-up reads `dataset_id = ? AND id > ?`: a range scan of the new rows only.
        batch.create_index("ix_item_dataset_id_id", ["dataset_id", "id"], unique=False)

    with op.batch_alter_table("seed_task") as batch:
        batch.create_check_constraint("instruction_not_empty", "length(instruction) > 0")
    with op.batch_alter_table("dataset") as batch:
        batch.create_check_constraint("name_not_empty", "length(name) > 0")


def downgrade() -> None:
    with op.batch_alter_table("dataset") as batch:
        batch.drop_constraint(op.f("ck_dataset_name_not_empty"), type_="check")
    with op.batch_alter_table("seed_task") as batch:
        batch.drop_constraint(op.f("ck_seed_task_instruction_not_empty"), type_="check")
    with op.batch_alter_table("item") as batch:
        batch.drop_index("ix_item_dataset_id_id")
        for name in ITEM_CHECKS:
            batch.drop_constraint(op.f(f"ck_item_{name}"), type_="check")
        batch.drop_constraint(op.f("fk_item_reply_id_generation_reply"), type_="foreignkey")
        batch.drop_column("reply_id")
    op.drop_table("generation_reply")
    with op.batch_alter_table("generation_job") as batch:
        for name in JOB_CHECKS:
            batch.drop_constraint(op.f(f"ck_generation_job_{name}"), type_="check")
        batch.alter_column("completion_tokens", type_=sa.Integer(), existing_nullable=False)
        batch.alter_column("prompt_tokens", type_=sa.Integer(), existing_nullable=False)
        for column in ("last_error", "errors", "requests", "seed", "backend"):
            batch.drop_column(column)
