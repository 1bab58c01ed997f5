"""Database plumbing: the declarative base, a UTC time type, database time, engines, sessions, migrations.

SQLite (the embedded default) and PostgreSQL behave alike here:
- Write transactions (`transaction()`) take the write lock at BEGIN on SQLite (BEGIN IMMEDIATE), so a
  read-then-write unit never fails half-way on a lock upgrade; readers are never blocked (WAL).
- `serialize()` makes concurrent writers of one resource take turns: a transaction-scoped advisory lock on
  PostgreSQL; on SQLite the write transaction already holds the only write lock there is.
- `utc_now()` is the database's clock, so leases agree across machines whose clocks do not.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Enum,
    Float,
    MetaData,
    create_engine,
    event,
    func,
    literal,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import TypeDecorator

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Named constraints: Alembic can drop or alter them later, on SQLite (batch mode) too.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_IMMEDIATE = "sprout_immediate"  # execution option: BEGIN IMMEDIATE on SQLite


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in and out, on every database (SQLite has no time zones: it stores UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: every stored time must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


def string_enum(cls: type[enum.Enum], name: str) -> Enum:
    """VARCHAR + a named CHECK constraint rather than a native PostgreSQL ENUM: adding a state is a plain
    migration on every database."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
    )


def utcnow() -> datetime:
    """The application's clock, for timestamps that order events (leases use `utc_now()`, the database's)."""
    return datetime.now(UTC)


class utc_now(FunctionElement[datetime]):  # noqa: N801 (reads like the SQL function it renders)
    """The database server's current UTC time plus `seconds`, as an SQL expression."""

    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__(literal(float(seconds), Float()))


@compiles(utc_now, "sqlite")
def _utc_now_sqlite(element: utc_now, compiler: Any, **kw: Any) -> str:
    # Same text format SQLAlchemy stores ("YYYY-MM-DD HH:MM:SS.ffffff"), so stored times compare as strings.
    (offset,) = element.clauses
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', ({compiler.process(offset, **kw)}) || ' seconds')"


@compiles(utc_now, "postgresql")
def _utc_now_postgresql(element: utc_now, compiler: Any, **kw: Any) -> str:
    (offset,) = element.clauses
    return f"(statement_timestamp() + make_interval(secs => {compiler.process(offset, **kw)}))"


def normalize_database_url(url: str) -> str:
    """Use psycopg 3 for postgresql:// URLs (SQLAlchemy's default driver would be psycopg2, not installed)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_db_engine(url: str) -> Engine:
    url = normalize_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # The worker, the API and the CLI share one file; the busy timeout turns lock contention into waits.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # Up to 50 connections per process: the thread pool that serves sync routes has 40 threads, and a request
    # may hold a read and a write connection at once; 20 stay open between bursts. Pre-ping finds connections
    # a restarted server dropped.
    return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=30)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit BEGIN cannot say IMMEDIATE).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    immediate = connection.get_execution_options().get(_IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reads that write nothing. On PostgreSQL they run in autocommit, which spares the BEGIN and
    ROLLBACK round trips a transaction costs (every request reads its caller's token this way); SQLite's
    transactions are local calls, and its reads stay plain sessions."""
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work that writes: committed if the block finishes, rolled back (nothing written) if it raises.

    On SQLite it holds the database's write lock from its first statement; reads that write nothing should use
    a plain `factory()` session instead, which never waits for writers.
    """
    with factory() as session, session.begin():
        session.connection(execution_options={_IMMEDIATE: True})
        yield session


def serialize(session: Session, namespace: int, key: int) -> None:
    """Wait until no other transaction holds (namespace, key), and hold it until this transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(namespace, key)))


def try_serialize(session: Session, namespace: int, key: int) -> bool:
    """Like `serialize`, without waiting: False when another transaction holds (namespace, key) now."""
    if session.get_bind().dialect.name == "postgresql":
        return bool(session.scalar(select(func.pg_try_advisory_xact_lock(namespace, key))))
    return True


def in_models(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Whether a schema object is the models' to declare (Alembic's include_object): PostgreSQL's trigram
    indexes are made by migration 0003 only where the server allows the extension, so they are not."""
    return not (type_ == "index" and name is not None and name.endswith("_trgm"))


MIGRATION_LOCK = 0x5350_4D47  # "SPMG": the advisory lock that lets one process at a time migrate


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer Sprout than this one: this code must not touch it."""


class SchemaBehindError(RuntimeError):
    """The database's schema is older than this code's, and this process was told not to migrate it."""


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = normalize_database_url(url)
    return config


def schema_revisions(url: str) -> tuple[str | None, str]:
    """(the database's Alembic revision, or None for an empty database; the newest revision this code knows)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(url)).get_current_head()
    assert head is not None
    engine = create_engine(normalize_database_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return current, head


def check_schema(url: str, *, allow_behind: bool) -> tuple[str | None, str]:
    """SchemaTooNewError when the database holds a revision this code does not know (a newer Sprout migrated
    it); SchemaBehindError when it is older and `allow_behind` is False. Returns (current, head)."""
    from alembic.script import ScriptDirectory

    current, head = schema_revisions(url)
    if current is not None and current != head:
        script = ScriptDirectory.from_config(_alembic_config(url))
        try:
            script.get_revision(current)
        except Exception:  # noqa: BLE001 (alembic raises several kinds for an unknown revision)
            raise SchemaTooNewError(
                f"the database's schema is at revision {current}, newer than this Sprout knows (its newest is "
                f"{head}): a newer version migrated it. Upgrade Sprout here before running it against this "
                "database."
            ) from None
    if current != head and not allow_behind:
        raise SchemaBehindError(
            f"the database's schema is at revision {current or 'none'}, older than this Sprout's {head}: run "
            "`sprout migrate` (or start this process with migrations allowed)"
        )
    return current, head


def run_migrations(url: str) -> None:
    """Bring the schema to the newest Alembic revision (what `sprout migrate` and every start-up do). A current
    schema costs one read and no lock, so a fleet of processes starting together does not queue; otherwise they
    take turns under a lock: the first migrates, the others find the schema current. A database migrated by a
    newer Sprout is refused (SchemaTooNewError), never downgraded or written."""
    from alembic import command

    current, head = check_schema(url, allow_behind=True)
    if current == head:
        return
    with _migration_lock(url):
        command.upgrade(_alembic_config(url), "head")


@contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """PostgreSQL: a session advisory lock on a connection of its own. SQLite: an exclusive lock on a file beside
    the database (the migration's own connection needs the database itself)."""
    parsed = make_url(normalize_database_url(url))
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(parsed, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(select(func.pg_advisory_lock(MIGRATION_LOCK)))
                try:
                    yield
                finally:
                    conn.execute(select(func.pg_advisory_unlock(MIGRATION_LOCK)))
        finally:
            engine.dispose()
        return
    database = parsed.database
    if not database or database == ":memory:":
        yield
        return
    import fcntl

    path = Path(database).with_name(Path(database).name + ".migrate-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
