"""Fine-tuning: stored files (content in chunks), snapshots of approved items with their copies, fine-tuning
jobs (a LeasedJob like generation jobs) with their events and checkpoints, and LoRA adapters registered on
serving backends.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stored_file",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=40), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "purpose IN ('fine-tune', 'fine-tune-results')", name=op.f("ck_stored_file_purpose_valid")
        ),
        sa.CheckConstraint("bytes >= 0 AND records >= 0", name=op.f("ck_stored_file_sizes_valid")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stored_file")),
        sa.UniqueConstraint("public_id", name=op.f("uq_stored_file_public_id")),
    )
    op.create_table(
        "file_chunk",
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["stored_file.id"],
            name=op.f("fk_file_chunk_file_id_stored_file"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", "seq", name=op.f("pk_file_chunk")),
    )
    op.create_table(
        "snapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("train", sa.Integer(), nullable=False),
        sa.Column("validation", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("validation_fraction", sa.Float(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("training_file_id", sa.Integer(), nullable=True),
        sa.Column("validation_file_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "items >= 1 AND train >= 1 AND validation >= 0", name=op.f("ck_snapshot_counts_valid")
        ),
        sa.CheckConstraint(
            "validation_fraction >= 0 AND validation_fraction < 1",
            name=op.f("ck_snapshot_validation_fraction_range"),
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], name=op.f("fk_snapshot_dataset_id_dataset"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["training_file_id"],
            ["stored_file.id"],
            name=op.f("fk_snapshot_training_file_id_stored_file"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["validation_file_id"],
            ["stored_file.id"],
            name=op.f("fk_snapshot_validation_file_id_stored_file"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshot")),
    )
    with op.batch_alter_table("snapshot", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_snapshot_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "fine_tune_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("trainer", sa.String(length=64), nullable=False),
        sa.Column("training_file_id", sa.Integer(), nullable=False),
        sa.Column("validation_file_id", sa.Integer(), nullable=True),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("suffix", sa.String(length=18), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("metadata", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("files_validated", sa.Boolean(), nullable=False),
        sa.Column("fine_tuned_model", sa.String(length=300), nullable=True),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_param", sa.String(length=64), nullable=True),
        sa.Column("result_files", sa.JSON(), nullable=False),
        sa.Column("evaluation", sa.JSON(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("snapshot_id", sa.Integer(), nullable=True),
        sa.Column("remote_job_id", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                name="status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status <> 'running' OR (worker_id IS NOT NULL AND lease_until IS NOT NULL)",
            name=op.f("ck_fine_tune_job_running_is_leased"),
        ),
        sa.CheckConstraint("attempt >= 0", name=op.f("ck_fine_tune_job_attempt_not_negative")),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_fine_tune_job_dataset_id_dataset"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshot.id"],
            name=op.f("fk_fine_tune_job_snapshot_id_snapshot"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["training_file_id"],
            ["stored_file.id"],
            name=op.f("fk_fine_tune_job_training_file_id_stored_file"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["validation_file_id"],
            ["stored_file.id"],
            name=op.f("fk_fine_tune_job_validation_file_id_stored_file"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fine_tune_job")),
        sa.UniqueConstraint("public_id", name=op.f("uq_fine_tune_job_public_id")),
    )
    with op.batch_alter_table("fine_tune_job", schema=None) as batch_op:
        batch_op.create_index("ix_fine_tune_job_dataset", ["dataset_id", "id"], unique=False)
        batch_op.create_index("ix_fine_tune_job_status_created", ["status", "created_at"], unique=False)

    op.create_table(
        "snapshot_item",
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(length=10), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.CheckConstraint("split IN ('train', 'validation')", name=op.f("ck_snapshot_item_split_valid")),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshot.id"],
            name=op.f("fk_snapshot_item_snapshot_id_snapshot"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "position", name=op.f("pk_snapshot_item")),
    )
    with op.batch_alter_table("snapshot_item", schema=None) as batch_op:
        batch_op.create_index("ix_snapshot_item_item", ["item_id"], unique=False)

    op.create_table(
        "fine_tune_checkpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("step_number", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["fine_tune_job.id"],
            name=op.f("fk_fine_tune_checkpoint_job_id_fine_tune_job"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fine_tune_checkpoint")),
        sa.UniqueConstraint("job_id", "step_number", name="uq_fine_tune_checkpoint_step"),
    )
    op.create_table(
        "fine_tune_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("remote_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("level IN ('info', 'warn', 'error')", name=op.f("ck_fine_tune_event_level_valid")),
        sa.CheckConstraint("type IN ('message', 'metrics')", name=op.f("ck_fine_tune_event_type_valid")),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["fine_tune_job.id"],
            name=op.f("fk_fine_tune_event_job_id_fine_tune_job"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fine_tune_event")),
    )
    with op.batch_alter_table("fine_tune_event", schema=None) as batch_op:
        batch_op.create_index("ix_fine_tune_event_job_id", ["job_id", "id"], unique=False)

    op.create_table(
        "lora_adapter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["fine_tune_job.id"],
            name=op.f("fk_lora_adapter_job_id_fine_tune_job"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lora_adapter")),
        sa.UniqueConstraint("backend", "name", name="uq_lora_adapter_backend_name"),
    )


def downgrade() -> None:
    op.drop_table("lora_adapter")
    with op.batch_alter_table("fine_tune_event", schema=None) as batch_op:
        batch_op.drop_index("ix_fine_tune_event_job_id")

    op.drop_table("fine_tune_event")
    op.drop_table("fine_tune_checkpoint")
    with op.batch_alter_table("snapshot_item", schema=None) as batch_op:
        batch_op.drop_index("ix_snapshot_item_item")

    op.drop_table("snapshot_item")
    with op.batch_alter_table("fine_tune_job", schema=None) as batch_op:
        batch_op.drop_index("ix_fine_tune_job_status_created")
        batch_op.drop_index("ix_fine_tune_job_dataset")

    op.drop_table("fine_tune_job")
    with op.batch_alter_table("snapshot", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_snapshot_dataset_id"))

    op.drop_table("snapshot")
    op.drop_table("file_chunk")
    op.drop_table("stored_file")
