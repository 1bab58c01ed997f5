"""The pure parts of item listings: LIKE escaping and keyset cursors (the SQL runs in the integration tests)."""

from __future__ import annotations

import pytest

from app.core.errors import InvalidFieldError
from app.generation.item_query import cursor_of, decode_cursor, escape_like
from app.generation.models import Item


def test_like_metacharacters_match_literally() -> None:
    assert escape_like("100%_done\\") == "100\\%\\_done\\\\"
    assert escape_like("普通文本") == "普通文本"


@pytest.mark.parametrize("sort", ["oldest", "newest", "doubtful"])
def test_a_cursor_gives_back_its_key(sort: str) -> None:
    item = Item(id=42, nearest_rouge_l=0.6875)
    key = decode_cursor(sort, cursor_of(sort, item))  # type: ignore[arg-type]
    assert key == ([0.6875, 42] if sort == "doubtful" else [42])


def test_an_item_without_a_neighbour_sorts_as_zero() -> None:
    assert decode_cursor("doubtful", cursor_of("doubtful", Item(id=7, nearest_rouge_l=None))) == [0.0, 7]


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64 at all!",
        "e30",
        cursor_of("oldest", Item(id=1)),
        "eyJzIjoiZG91YnRmdWwiLCJrIjpbIngiLDFdfQ",
    ],
)
def test_a_foreign_or_broken_cursor_is_refused_naming_the_field(cursor: str) -> None:
    with pytest.raises(InvalidFieldError) as refused:
        decode_cursor("doubtful", cursor)
    assert refused.value.field == "cursor"
