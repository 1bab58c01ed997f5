"""Initial schema: datasets, seed tasks, generation jobs and items.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-24 07:12:12.037639
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "generation_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                name="job_status",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("requested", sa.Integer(), nullable=False),
        sa.Column("prompts", sa.Integer(), nullable=False),
        sa.Column("raw", sa.Integer(), nullable=False),
        sa.Column("parsed", sa.Integer(), nullable=False),
        sa.Column("filtered", sa.JSON(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("generation_job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_generation_job_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index("ix_generation_job_status_created", ["status", "created_at"], unique=False)

    op.create_table(
        "seed_task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("instruction_hash", sa.String(length=64), nullable=False),
        sa.Column("instances", sa.JSON(), nullable=False),
        sa.Column("is_classification", sa.Boolean(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("source_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset_id", "instruction_hash", name="uq_seed_task_instruction"),
    )
    with op.batch_alter_table("seed_task", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_seed_task_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "approved",
                "rejected",
                "filtered",
                name="item_status",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("filter_reason", sa.String(length=64), nullable=True),
        sa.Column("duplicate_signal", sa.String(length=16), nullable=True),
        sa.Column("nearest_kind", sa.String(length=8), nullable=True),
        sa.Column("nearest_id", sa.Integer(), nullable=True),
        sa.Column("nearest_rouge_l", sa.Float(), nullable=True),
        sa.Column("fuzzy_score", sa.Float(), nullable=True),
        sa.Column("semantic_score", sa.Float(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("quality", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["generation_job.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.create_index("ix_item_dataset_status_id", ["dataset_id", "status", "id"], unique=False)
        batch_op.create_index("ix_item_job_id", ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.drop_index("ix_item_job_id")
        batch_op.drop_index("ix_item_dataset_status_id")

    op.drop_table("item")
    with op.batch_alter_table("seed_task", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_seed_task_dataset_id"))

    op.drop_table("seed_task")
    with op.batch_alter_table("generation_job", schema=None) as batch_op:
        batch_op.drop_index("ix_generation_job_status_created")
        batch_op.drop_index(batch_op.f("ix_generation_job_dataset_id"))

    op.drop_table("generation_job")
    op.drop_table("dataset")
