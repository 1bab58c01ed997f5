"""Which items, in which order: the filters and sorts that item lists, the review queue and bulk actions share,
with keyset pagination so a deep page costs what the first one does.

Every filter has an index that leads with the dataset (see models.Item). The text search is an escaped,
case-insensitive LIKE over instruction, input and output: PostgreSQL's trigram indexes serve it for three
characters or more (Chinese included); shorter terms, and SQLite, scan until the page is full.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import FunctionElement

from app.core.errors import InvalidFieldError
from app.core.text import storable
from app.generation.models import Item, ItemStatus

Sort = Literal["oldest", "newest", "doubtful"]
SORTS: tuple[Sort, ...] = ("oldest", "newest", "doubtful")
# "Most doubtful first": the nearest neighbour's ROUGE-L, highest first; no neighbour counts as 0. The literal
# is rendered into the SQL (not bound) so the database matches it with the index on the same expression.
DOUBT = func.coalesce(Item.nearest_rouge_l, literal_column("0.0"))
LIKE_ESCAPE = "\\"
MAX_KEY = 2**63 - 1  # a larger number in a cursor would overflow the database's integers (a 500, not a 422)


@dataclass(frozen=True, slots=True)
class ItemQuery:
    status: ItemStatus | None = None
    job_id: int | None = None
    import_id: int | None = None
    language: str | None = None
    filter_reason: str | None = None
    duplicate_signal: str | None = None
    text: str | None = None

    def as_params(self) -> dict[str, Any]:
        """The query as URL parameters / a JSON object (what a bulk action records)."""
        values = {
            "status": self.status.value if self.status is not None else None,
            "job_id": self.job_id,
            "import_id": self.import_id,
            "language": self.language,
            "filter_reason": self.filter_reason,
            "duplicate_signal": self.duplicate_signal,
            "q": self.text,
        }
        return {k: v for k, v in values.items() if v is not None}


class contains_text(FunctionElement[bool]):  # noqa: N801 (reads like the SQL it renders)
    """A case-insensitive LIKE: ILIKE on PostgreSQL (which its trigram indexes serve), plain LIKE on SQLite (case-
    insensitive already, and over twice as fast as SQLAlchemy's lower(x) LIKE lower(y))."""

    type = Boolean()
    inherit_cache = True


@compiles(contains_text)
def _contains_text(element: contains_text, compiler: Any, **kw: Any) -> str:
    column, pattern = (compiler.process(c, **kw) for c in element.clauses)
    return f"{column} LIKE {pattern} ESCAPE '\\'"


@compiles(contains_text, "postgresql")
def _contains_text_postgresql(element: contains_text, compiler: Any, **kw: Any) -> str:
    column, pattern = (compiler.process(c, **kw) for c in element.clauses)
    return f"{column} ILIKE {pattern} ESCAPE '\\'"


def escape_like(text: str) -> str:
    return (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )


def conditions(dataset_id: int, query: ItemQuery) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [Item.dataset_id == dataset_id]
    # A filter reason or a duplicate signal implies status "filtered" (a CHECK constraint says so); leaving the
    # redundant status out steers the database to the reason's (or signal's) own index.
    implied = (
        ItemStatus.filtered if query.filter_reason is not None or query.duplicate_signal is not None else None
    )
    if query.status is not None and query.status is not implied:
        where.append(Item.status == query.status)
    if query.job_id is not None:
        where.append(Item.job_id == query.job_id)
    if query.import_id is not None:
        where.append(Item.import_id == query.import_id)
    if query.language is not None:
        where.append(Item.language == query.language)
    if query.filter_reason is not None:
        where.append(Item.filter_reason == query.filter_reason)
    if query.duplicate_signal is not None:
        where.append(Item.duplicate_signal == query.duplicate_signal)
    if query.text:
        # Rendered into the statement, not bound: a prepared statement's generic plan cannot know the pattern,
        # and would not use the trigram indexes (PostgreSQL switches to one after a few executions).
        pattern = bindparam("text_pattern", f"%{escape_like(storable(query.text))}%", literal_execute=True)
        where.append(
            or_(*(contains_text(column, pattern) for column in (Item.instruction, Item.input, Item.output)))
        )
    return where


# --- keyset pagination ---------------------------------------------------------------------------------------


def order_by(sort: Sort) -> list[Any]:
    if sort == "oldest":
        return [Item.id.asc()]
    if sort == "newest":
        return [Item.id.desc()]
    return [DOUBT.desc(), Item.id.desc()]


def _after(sort: Sort, key: list[Any]) -> ColumnElement[bool]:
    if sort == "oldest":
        return Item.id > key[0]
    if sort == "newest":
        return Item.id < key[0]
    # The first condition is implied by the second; it is there so SQLite bounds its index scan with it (it
    # does not use a row-value comparison as an index range).
    return and_(DOUBT <= key[0], tuple_(DOUBT, Item.id) < tuple_(key[0], key[1]))


def cursor_of(sort: Sort, item: Item) -> str:
    key: list[Any] = [item.id] if sort != "doubtful" else [item.nearest_rouge_l or 0.0, item.id]
    raw = json.dumps({"s": sort, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _is_key_part(value: Any) -> bool:
    """A number a key of ours can hold: an id in the database's integer range, or a finite score."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_KEY <= value <= MAX_KEY
    return isinstance(value, float) and math.isfinite(value)


def decode_cursor(sort: Sort, cursor: str) -> list[Any]:
    """The key a cursor continues after; a cursor of another sort, or not one of ours, is a 422 on `cursor`."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key = data["k"]
        valid = data["s"] == sort and isinstance(key, list) and len(key) == (2 if sort == "doubtful" else 1)
        valid = valid and isinstance(key[-1], int) and all(_is_key_part(k) for k in key)
    except (ValueError, TypeError, KeyError):
        valid = False
    if not valid:
        raise InvalidFieldError(
            "cursor", f"not a cursor of this listing (sort={sort}); start again without one", location="query"
        )
    return key


def page_query(dataset_id: int, query: ItemQuery, sort: Sort, cursor: str | None, limit: int) -> Select[Any]:
    where = conditions(dataset_id, query)
    if cursor is not None:
        where.append(_after(sort, decode_cursor(sort, cursor)))
    return select(Item).where(and_(*where)).order_by(*order_by(sort)).limit(limit)


def page(
    session: Session,
    dataset_id: int,
    query: ItemQuery,
    *,
    sort: Sort = "oldest",
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Item], str | None]:
    """One page of items and the cursor of the next page (None on the last page). One indexed range scan: a
    deep page costs what the first one does."""
    rows = list(session.scalars(page_query(dataset_id, query, sort, cursor, limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (cursor_of(sort, rows[-1]) if more and rows else None)


def count(session: Session, dataset_id: int, query: ItemQuery) -> int:
    """How many items match (a scan of the matching rows: asked for explicitly, never on every page)."""
    return session.scalar(select(func.count()).select_from(Item).where(*conditions(dataset_id, query))) or 0
