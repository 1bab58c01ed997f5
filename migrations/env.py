"""Alembic environment: the URL comes from the caller (run_migrations) or SPROUT_DATABASE_URL.

Every room's tables are imported here, so autogenerate and the schema check in the tests see all of them.
"""

from __future__ import annotations

from alembic import context

import app.auth.models  # noqa: F401
import app.datasets.models  # noqa: F401
import app.finetune.models  # noqa: F401
import app.generation.models  # noqa: F401
import app.jobs.models  # noqa: F401
import app.review.models  # noqa: F401
import app.schedules.models  # noqa: F401
from app.core.config import get_settings
from app.core.db import Base, create_db_engine, in_models, normalize_database_url

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("database_url") or normalize_database_url(get_settings().database_url)


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_object=in_models,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_db_engine(_url())
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            # Batch mode rebuilds a table by copy, drop and rename. With foreign keys enforced, the drop would
            # act as a DELETE and cascade into the rows that reference it; the pragma only works outside a
            # transaction, so it goes to the driver's connection before SQLAlchemy begins one.
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        # Batch mode lets later migrations ALTER tables on SQLite too.
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            include_object=in_models,
        )
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            connection.commit()
            if broken:
                raise RuntimeError(f"migration left rows with dangling foreign keys: {broken[:5]}")
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
