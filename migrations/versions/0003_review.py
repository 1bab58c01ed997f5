"""Review queue, users and roles: accounts, tokens, sessions, the audit log; claims, responses and events; item
language, edits and imports; counts of items by status kept by triggers.

- user_account, api_token, web_session, login_failure, audit_event: who may do what (app/auth).
- item_import: a file of instruction data brought into a dataset (items keep which import they came from).
- item: `language` (a script rule, indexed), `original` (the generated text once a reviewer edited it),
  `import_id`, the `disputed` status; claimed_by / lease_until go (claims are per reviewer, in review_claim);
  indexes for every filter of the review queue and its "most doubtful first" order.
- review_claim, review_response, review_event: who holds an item, what each reviewer answered, and the
  append-only log of every transition.
- item_count: items per (dataset, status), kept exact by triggers on item, so counts cost the same at any size;
  review_tally and review_hourly: decisions per reviewer and per hour, kept by a trigger on review_event.
- PostgreSQL: trigram (pg_trgm) indexes for the queue's text search, when the server lets us create the
  extension.
  On SQLite a batch migration that rebuilds `item` drops its triggers and its expression index: such a migration
  must create them again (tests/integration/review/test_counts.py checks the counts against the rows).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.reports.language import script_language

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ITEM_STATUSES = "('pending', 'approved', 'rejected', 'filtered')"
ITEM_STATUSES = "('pending', 'approved', 'rejected', 'filtered', 'disputed')"
LANGUAGES = "('zh', 'ja', 'ko', 'latin', 'mixed', 'other')"
DOUBT = "coalesce(nearest_rouge_l, 0.0)"

SQLITE_TRIGGERS = (
    """CREATE TRIGGER item_count_insert AFTER INSERT ON item BEGIN
        INSERT INTO item_count (dataset_id, status, shard, n) VALUES (NEW.dataset_id, NEW.status, 0, 1)
        ON CONFLICT (dataset_id, status, shard) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER item_count_update AFTER UPDATE OF status, dataset_id ON item
    WHEN OLD.status IS NOT NEW.status OR OLD.dataset_id IS NOT NEW.dataset_id BEGIN
        UPDATE item_count SET n = n - 1 WHERE dataset_id = OLD.dataset_id AND status = OLD.status AND shard = 0;
        INSERT INTO item_count (dataset_id, status, shard, n) VALUES (NEW.dataset_id, NEW.status, 0, 1)
        ON CONFLICT (dataset_id, status, shard) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER item_count_delete AFTER DELETE ON item BEGIN
        UPDATE item_count SET n = n - 1 WHERE dataset_id = OLD.dataset_id AND status = OLD.status AND shard = 0;
    END""",
)

# One statement-level trigger per kind of change: a bulk action over 50,000 items updates each count row once.
# Counts are split over SHARDS rows per (dataset, status), a transaction writing only the shard of its own id,
# so concurrent reviewers' decisions rarely queue behind one row (readers sum the shards). A transaction's
# count rows are written in (dataset, status) order, in one upsert per statement (a decrement is an insert whose
# conflict adds a negative number: hence no CHECK on n), so two writers never wait for each other in opposite
# orders. Rows of a dataset that is being deleted (a cascade) are not recreated.
SHARDS = 16
POSTGRES_FUNCTION = f"""
CREATE FUNCTION item_count_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO item_count AS c (dataset_id, status, shard, n)
        SELECT dataset_id, status, txid_current() % {SHARDS}, count(*) FROM new_rows
        GROUP BY dataset_id, status ORDER BY dataset_id, status
        ON CONFLICT (dataset_id, status, shard) DO UPDATE SET n = c.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO item_count AS c (dataset_id, status, shard, n)
        SELECT dataset_id, status, txid_current() % {SHARDS}, -count(*) FROM old_rows
        WHERE EXISTS (SELECT 1 FROM dataset WHERE dataset.id = old_rows.dataset_id)
        GROUP BY dataset_id, status ORDER BY dataset_id, status
        ON CONFLICT (dataset_id, status, shard) DO UPDATE SET n = c.n + excluded.n;
    ELSE
        INSERT INTO item_count AS c (dataset_id, status, shard, n)
        SELECT dataset_id, status, txid_current() % {SHARDS}, sum(k) FROM (
            SELECT o.dataset_id, o.status, -1 AS k FROM old_rows o JOIN new_rows w ON w.id = o.id
            WHERE o.status IS DISTINCT FROM w.status OR o.dataset_id IS DISTINCT FROM w.dataset_id
            UNION ALL
            SELECT w.dataset_id, w.status, 1 AS k FROM old_rows o JOIN new_rows w ON w.id = o.id
            WHERE o.status IS DISTINCT FROM w.status OR o.dataset_id IS DISTINCT FROM w.dataset_id
        ) AS moves GROUP BY dataset_id, status HAVING sum(k) <> 0 ORDER BY dataset_id, status
        ON CONFLICT (dataset_id, status, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
    RETURN NULL;
END $$
"""
POSTGRES_TRIGGERS = (
    "CREATE TRIGGER item_count_insert AFTER INSERT ON item REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION item_count_apply()",
    "CREATE TRIGGER item_count_update AFTER UPDATE ON item REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION item_count_apply()",
    "CREATE TRIGGER item_count_delete AFTER DELETE ON item REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION item_count_apply()",
)


DECISION_ACTIONS = "('approve', 'reject', 'respond', 'dispute')"
SQLITE_TALLY_TRIGGER = f"""CREATE TRIGGER review_tally_insert AFTER INSERT ON review_event BEGIN
    INSERT INTO review_tally (dataset_id, actor, action, bulk, edited, n)
    VALUES (NEW.dataset_id, NEW.actor, NEW.action, NEW.bulk_id IS NOT NULL, NEW.after IS NOT NULL, 1)
    ON CONFLICT (dataset_id, actor, action, bulk, edited) DO UPDATE SET n = n + 1;
    UPDATE review_tally SET n = n - 1
    WHERE NEW.undoes_id IS NOT NULL
      AND (dataset_id, actor, action, bulk, edited) = (
          SELECT dataset_id, actor, action, bulk_id IS NOT NULL, after IS NOT NULL
          FROM review_event WHERE id = NEW.undoes_id);
    INSERT INTO review_hourly (dataset_id, hour, shard, n)
    SELECT NEW.dataset_id, strftime('%Y-%m-%d %H:00', NEW.created_at), 0, 1
    WHERE NEW.bulk_id IS NULL AND NEW.action IN {DECISION_ACTIONS}
    ON CONFLICT (dataset_id, hour, shard) DO UPDATE SET n = n + 1;
END"""
POSTGRES_TALLY_FUNCTION = f"""
CREATE FUNCTION review_tally_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO review_tally AS t (dataset_id, actor, action, bulk, edited, n)
    SELECT dataset_id, actor, action, bulk, edited, sum(k) FROM (
        SELECT dataset_id, actor, action, bulk_id IS NOT NULL AS bulk, after IS NOT NULL AS edited, 1 AS k
        FROM new_rows
        UNION ALL
        SELECT u.dataset_id, u.actor, u.action, u.bulk_id IS NOT NULL, u.after IS NOT NULL, -1
        FROM new_rows r JOIN review_event u ON u.id = r.undoes_id
    ) AS c GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (dataset_id, actor, action, bulk, edited) DO UPDATE SET n = t.n + excluded.n;
    INSERT INTO review_hourly AS h (dataset_id, hour, shard, n)
    SELECT dataset_id, to_char(date_trunc('hour', created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD HH24:00'),
           txid_current() % {SHARDS}, count(*)
    FROM new_rows WHERE bulk_id IS NULL AND action IN {DECISION_ACTIONS}
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (dataset_id, hour, shard) DO UPDATE SET n = h.n + excluded.n;
    RETURN NULL;
END $$
"""
POSTGRES_TALLY_TRIGGER = (
    "CREATE TRIGGER review_tally_insert AFTER INSERT ON review_event REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION review_tally_apply()"
)
# PostgreSQL: trigram indexes serve the review queue's text search (ILIKE '%...%', three characters or more,
# Chinese included). They need the pg_trgm extension; a server that will not create it gets no such index and
# the search scans, as it does on SQLite. Not in the models' metadata: SQLite would build them as B-trees.
TRIGRAM_INDEXES = {f"ix_item_{column}_trgm": column for column in ("instruction", "input", "output")}


def _timestamps() -> list[sa.Column]:
    return [sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "user_account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "admin",
                "service",
                "reviewer",
                name="role",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.CheckConstraint("length(name) > 0", name=op.f("ck_user_account_name_not_empty")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_account")),
        sa.UniqueConstraint("name", name=op.f("uq_user_account_name")),
    )
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        *_timestamps(),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_api_token_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token")),
        sa.UniqueConstraint("digest", name=op.f("uq_api_token_digest")),
    )
    op.create_index(op.f("ix_api_token_user_id"), "api_token", ["user_id"])
    op.create_table(
        "web_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        *_timestamps(),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_web_session_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_session")),
        sa.UniqueConstraint("digest", name=op.f("uq_web_session_digest")),
    )
    op.create_index(op.f("ix_web_session_user_id"), "web_session", ["user_id"])
    op.create_table(
        "login_failure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failure")),
    )
    op.create_index("ix_login_failure_name_at", "login_failure", ["name", "created_at"])
    op.create_index("ix_login_failure_client_at", "login_failure", ["client", "created_at"])
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["user_account.id"],
            name=op.f("fk_audit_event_actor_id_user_account"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    op.create_index("ix_audit_event_created", "audit_event", ["created_at"])

    op.create_table(
        "item_import",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "running",
                "succeeded",
                "failed",
                name="status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("filtered", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        *_timestamps(),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "records >= 0 AND done >= 0 AND done <= records AND accepted >= 0 AND duplicates >= 0",
            name=op.f("ck_item_import_counts_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], name=op.f("fk_item_import_dataset_id_dataset"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_item_import")),
    )
    op.create_index(op.f("ix_item_import_dataset_id"), "item_import", ["dataset_id"])

    with op.batch_alter_table("item") as batch:
        batch.add_column(sa.Column("language", sa.String(length=8), nullable=False, server_default="other"))
        batch.add_column(sa.Column("original", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("import_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_item_import_id_item_import"), "item_import", ["import_id"], ["id"], ondelete="SET NULL"
        )
        batch.drop_column("claimed_by")
        batch.drop_column("lease_until")
        batch.drop_constraint(op.f("ck_item_status"), type_="check")
        batch.create_check_constraint("status", f"status IN {ITEM_STATUSES}")
        batch.create_check_constraint("language_valid", f"language IN {LANGUAGES}")
        batch.drop_index("ix_item_job_id")
        batch.create_index("ix_item_job_id_id", ["job_id", "id"])
        batch.create_index("ix_item_import_id_id", ["import_id", "id"])
        batch.create_index("ix_item_dataset_status_language", ["dataset_id", "status", "language", "id"])
        batch.create_index("ix_item_dataset_reason", ["dataset_id", "filter_reason", "id"])
        batch.create_index("ix_item_dataset_signal", ["dataset_id", "duplicate_signal", "id"])
    # An expression index ("most doubtful first") cannot go through a batch rebuild's reflection.
    op.create_index("ix_item_review_doubt", "item", ["dataset_id", "status", sa.text(DOUBT), "id"])
    op.create_index("ix_item_dataset_doubt", "item", ["dataset_id", sa.text(DOUBT), "id"])
    op.create_index(
        "ix_item_dataset_reason_doubt", "item", ["dataset_id", "filter_reason", sa.text(DOUBT), "id"]
    )
    _create_trigram_indexes()
    _label_existing_items()

    op.create_table(
        "review_claim",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.id"], name=op.f("fk_review_claim_item_id_item"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_review_claim_dataset_id_dataset"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_review_claim_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_claim")),
        sa.UniqueConstraint("item_id", "user_id", name="uq_review_claim_item_user"),
    )
    op.create_index("ix_review_claim_user", "review_claim", ["user_id", "dataset_id", "lease_until"])
    op.create_index("ix_review_claim_item", "review_claim", ["item_id", "lease_until"])
    op.create_table(
        "review_response",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column(
            "verdict",
            sa.Enum(
                "approve", "reject", name="verdict", native_enum=False, create_constraint=True, length=16
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("edits", sa.JSON(), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.id"], name=op.f("fk_review_response_item_id_item"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_review_response_dataset_id_dataset"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_review_response_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_response")),
        sa.UniqueConstraint("item_id", "user_id", name="uq_review_response_item_user"),
    )
    op.create_index("ix_review_response_dataset_user", "review_response", ["dataset_id", "user_id"])
    op.create_table(
        "review_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column(
            "action",
            sa.Enum(
                "approve",
                "reject",
                "respond",
                "dispute",
                "restore",
                "reopen",
                "undo",
                name="action",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("from_status", sa.String(length=16), nullable=False),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("version_after", sa.Integer(), nullable=False),
        sa.Column("undoes_id", sa.Integer(), nullable=True),
        sa.Column("bulk_id", sa.String(length=32), nullable=True),
        *_timestamps(),
        sa.CheckConstraint("version_after >= 1", name=op.f("ck_review_event_version_positive")),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_review_event_dataset_id_dataset"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.id"], name=op.f("fk_review_event_item_id_item"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["user_account.id"],
            name=op.f("fk_review_event_actor_id_user_account"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["undoes_id"],
            ["review_event.id"],
            name=op.f("fk_review_event_undoes_id_review_event"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_event")),
    )
    op.create_index("ix_review_event_item", "review_event", ["item_id", "id"])
    op.create_index("ix_review_event_dataset_created", "review_event", ["dataset_id", "created_at"])
    op.create_index("ix_review_event_actor", "review_event", ["actor_id", "dataset_id", "id"])
    op.create_index("ix_review_event_undoes", "review_event", ["undoes_id"])

    op.create_table(
        "item_count",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], name=op.f("fk_item_count_dataset_id_dataset"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("dataset_id", "status", "shard", name=op.f("pk_item_count")),
    )
    op.execute(
        "INSERT INTO item_count (dataset_id, status, shard, n) "
        "SELECT dataset_id, status, 0, count(*) FROM item GROUP BY dataset_id, status"
    )
    create_count_triggers()

    op.create_table(
        "review_tally",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("bulk", sa.Boolean(), nullable=False),
        sa.Column("edited", sa.Boolean(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_review_tally_dataset_id_dataset"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "dataset_id", "actor", "action", "bulk", "edited", name=op.f("pk_review_tally")
        ),
    )
    op.create_table(
        "review_hourly",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("hour", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_review_hourly_dataset_id_dataset"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_id", "hour", "shard", name=op.f("pk_review_hourly")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_TALLY_FUNCTION)
        op.execute(POSTGRES_TALLY_TRIGGER)
    else:
        op.execute(SQLITE_TALLY_TRIGGER)


def _create_trigram_indexes() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        with bind.begin_nested():  # a refusal must not abort the migration's transaction
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError:
        return
    for name, column in TRIGRAM_INDEXES.items():
        # A small pending list (KB): new items wait there until merged, and every search scans it.
        op.execute(f"CREATE INDEX {name} ON item USING gin ({column} gin_trgm_ops) WITH (gin_pending_list_limit = 256)")


def create_count_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        for statement in POSTGRES_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def _label_existing_items() -> None:
    bind = op.get_bind()
    item = sa.table(
        "item",
        sa.column("id"),
        sa.column("instruction"),
        sa.column("input"),
        sa.column("output"),
        sa.column("language"),
    )
    rows = bind.execute(sa.select(item.c.id, item.c.instruction, item.c.input, item.c.output)).all()
    updates = []
    for row in rows:
        label = script_language(row.instruction, row.input, row.output)
        if label != "other":
            updates.append({"b_id": row.id, "b_language": label})
    for start in range(0, len(updates), 5000):
        bind.execute(
            sa.update(item)
            .where(item.c.id == sa.bindparam("b_id"))
            .values(language=sa.bindparam("b_language")),
            updates[start : start + 5000],
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for trigger in ("item_count_insert", "item_count_update", "item_count_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON item")
        op.execute("DROP FUNCTION IF EXISTS item_count_apply()")
    else:
        for trigger in ("item_count_insert", "item_count_update", "item_count_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS review_tally_insert ON review_event")
        op.execute("DROP FUNCTION IF EXISTS review_tally_apply()")
        for name in TRIGRAM_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS review_tally_insert")
    op.drop_table("review_hourly")
    op.drop_table("review_tally")
    op.drop_table("item_count")
    op.drop_table("review_event")
    op.drop_table("review_response")
    op.drop_table("review_claim")
    op.drop_index("ix_item_dataset_doubt", table_name="item")
    op.drop_index("ix_item_dataset_reason_doubt", table_name="item")
    op.drop_index("ix_item_review_doubt", table_name="item")
    op.execute("UPDATE item SET status = 'pending' WHERE status = 'disputed'")
    with op.batch_alter_table("item") as batch:
        batch.drop_index("ix_item_dataset_signal")
        batch.drop_index("ix_item_dataset_reason")
        batch.drop_index("ix_item_dataset_status_language")
        batch.drop_index("ix_item_import_id_id")
        batch.drop_index("ix_item_job_id_id")
        batch.create_index("ix_item_job_id", ["job_id"])
        batch.drop_constraint(op.f("ck_item_language_valid"), type_="check")
        batch.drop_constraint(op.f("ck_item_status"), type_="check")
        batch.create_check_constraint("status", f"status IN {OLD_ITEM_STATUSES}")
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))
        batch.drop_constraint(op.f("fk_item_import_id_item_import"), type_="foreignkey")
        batch.drop_column("import_id")
        batch.drop_column("original")
        batch.drop_column("language")
    op.drop_table("item_import")
    op.drop_table("audit_event")
    op.drop_table("login_failure")
    op.drop_table("web_session")
    op.drop_table("api_token")
    op.drop_table("user_account")
