"""Operations: job priorities and retry backoff (both kinds of job), time spent per generation job, the
workers' registry with heartbeats, cron schedules and the record of their firings (unique per schedule and
fire time).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 13:34:23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("claimed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker")),
    )
    op.create_table(
        "schedule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("cron", sa.String(length=120), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("coalesce", sa.Boolean(), nullable=False),
        sa.Column("max_runs", sa.Integer(), nullable=True),
        sa.Column("target_items", sa.Integer(), nullable=True),
        sa.Column("target_status", sa.String(length=16), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("missed", sa.Integer(), nullable=False),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "target_status IN ('accepted', 'approved')", name=op.f("ck_schedule_target_status_valid")
        ),
        sa.CheckConstraint("length(name) > 0 AND length(cron) > 0", name=op.f("ck_schedule_names_not_empty")),
        sa.CheckConstraint(
            "runs >= 0 AND missed >= 0 AND (max_runs IS NULL OR max_runs >= 1) AND (target_items IS NULL OR target_items >= 1)",
            name=op.f("ck_schedule_counts_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], name=op.f("fk_schedule_dataset_id_dataset"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule")),
        sa.UniqueConstraint("name", name=op.f("uq_schedule_name")),
    )
    with op.batch_alter_table("schedule", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_schedule_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index("ix_schedule_due", ["enabled", "next_fire_at"], unique=False)

    op.create_table(
        "schedule_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("coalesced", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("fired_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("outcome IN ('queued', 'skipped')", name=op.f("ck_schedule_run_outcome_valid")),
        sa.CheckConstraint("coalesced >= 1", name=op.f("ck_schedule_run_coalesced_positive")),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["generation_job.id"],
            name=op.f("fk_schedule_run_job_id_generation_job"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedule.id"],
            name=op.f("fk_schedule_run_schedule_id_schedule"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_run")),
        sa.UniqueConstraint("schedule_id", "fire_time", name="uq_schedule_run_firing"),
    )
    with op.batch_alter_table("fine_tune_job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_fine_tune_job_claim", ["status", "priority", "id"], unique=False)

    with op.batch_alter_table("generation_job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("busy_seconds", sa.Float(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_generation_job_claim", ["status", "priority", "id"], unique=False)
        batch_op.create_index("ix_generation_job_dataset_status", ["dataset_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("generation_job", schema=None) as batch_op:
        batch_op.drop_index("ix_generation_job_dataset_status")
        batch_op.drop_index("ix_generation_job_claim")
        batch_op.drop_column("not_before")
        batch_op.drop_column("priority")
        batch_op.drop_column("busy_seconds")

    with op.batch_alter_table("fine_tune_job", schema=None) as batch_op:
        batch_op.drop_index("ix_fine_tune_job_claim")
        batch_op.drop_column("not_before")
        batch_op.drop_column("priority")

    op.drop_table("schedule_run")
    with op.batch_alter_table("schedule", schema=None) as batch_op:
        batch_op.drop_index("ix_schedule_due")
        batch_op.drop_index(batch_op.f("ix_schedule_dataset_id"))

    op.drop_table("schedule")
    op.drop_table("worker")
