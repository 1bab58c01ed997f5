"""Upload-format plumbing: only what the seed and item parser tests do not already reach through the parsers."""

from __future__ import annotations

import pytest

from app.core.upload_formats import FileFormatError, json_array_records, jsonl_records


class _Error(FileFormatError):
    """A caller's own error class, to check that every error is raised as that class."""


def test_deeply_nested_json_lines_name_their_line() -> None:
    # Well-formed but too deep for the decoder: RecursionError, not a syntax error, must become a located error.
    text = "{}\n\n" + '{"a":' + "[" * 100_000 + "]" * 100_000 + "}\n"
    records = jsonl_records(text, _Error)
    assert next(records)[0] == {}
    with pytest.raises(_Error) as info:
        next(records)
    assert (info.value.line, info.value.record, info.value.reason) == (
        3,
        None,
        "invalid JSON: nested too deeply",
    )


def test_deeply_nested_array_element_names_its_line_and_is_the_callers_error() -> None:
    text = "[{},\n" + "[" * 100_000 + "]" * 100_000 + "]"
    records = json_array_records(text, _Error)
    value, where = next(records)
    assert (value, where.line, where.record, where.error_class) == ({}, 1, 1, _Error)
    assert type(where.error("f", "bad")) is _Error
    with pytest.raises(_Error) as info:
        next(records)
    assert (info.value.line, info.value.reason) == (2, "invalid JSON: nested too deeply")
