"""Plumbing shared by the parsers of uploaded files (`app.datasets.seed_formats`, `app.generation.item_formats`).

Both parsers must decode, split into records, locate errors and validate text exactly alike, so that a user sees
the same line numbers, limits and messages whichever file they upload; this module is that common part. It is
pure (no I/O) and knows no record shape: each parser passes its own error class (a `FileFormatError` subclass),
which every error raised here is built from, so callers never convert one error into another.

Line numbers are 1-based physical lines as an editor shows them: blank lines count, and CR, LF and CRLF all end
a line.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

MAX_FIELD_CHARS = 20_000
"""Most characters a text field may hold after stripping; longer is almost surely a broken file, not data."""

_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")
_LINE_BREAK_BYTES_RE = re.compile(rb"\r\n|\r|\n")
_JSON_WS_RE = re.compile(r"[ \t\n\r]*")
_FIRST_CHAR_RE = re.compile(r"\s*(\S)")
# PostgreSQL text columns refuse NUL, and UTF-8 encoders refuse unpaired surrogates (which JSON escapes produce).
_UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")


class FileFormatError(ValueError):
    """An uploaded file that cannot be imported, with where (line, field) so the user can fix it in an editor.

    `line` is 1-based, `record` is the element's 1-based position in a JSON array (None for other containers),
    `field` is the offending field such as ``output`` or ``instances[0].output`` (None when the whole record or
    line is wrong), `reason` is the bare message. Each parser raises its own subclass.
    """

    def __init__(
        self, reason: str, *, line: int | None = None, field: str | None = None, record: int | None = None
    ) -> None:
        self.reason = reason
        self.line = line
        self.field = field
        self.record = record
        super().__init__(_describe(reason, line, field, record))


def _describe(reason: str, line: int | None, field: str | None, record: int | None) -> str:
    """Put the location first, as compilers do, so the message reads 'line 7: field 'x': what is wrong'."""
    parts = []
    if line is not None:
        parts.append(f"line {line}" + (f" (record {record})" if record is not None else ""))
    elif record is not None:
        parts.append(f"record {record}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ": ".join([*parts, reason])


@dataclass(frozen=True, slots=True)
class Where:
    """Location of the record being validated, so field checks can raise precise errors.

    `error_class` is the parser's own `FileFormatError` subclass, which `error` builds.
    """

    line: int | None
    record: int | None = None
    error_class: type[FileFormatError] = dataclasses.field(kw_only=True)

    def error(self, field: str | None, reason: str) -> FileFormatError:
        return self.error_class(reason, line=self.line, field=field, record=self.record)


def decode(data: bytes | str, error: type[FileFormatError]) -> str:
    """UTF-8 with or without BOM; Excel and Windows Notepad add the BOM, which must not leak into a header."""
    if isinstance(data, str):
        text = data
    else:
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = len(_LINE_BREAK_BYTES_RE.findall(raw, 0, exc.start)) + 1
            raise error(
                f"invalid UTF-8 at byte offset {exc.start}; save the file as UTF-8", line=line
            ) from None
    return text.removeprefix("\ufeff")


def first_char(text: str) -> str:
    """The first non-whitespace character, '' for blank text; '[' marks a JSON array."""
    match = _FIRST_CHAR_RE.match(text)
    return match.group(1) if match else ""


def extension(filename: str | None) -> str:
    """Lower-case extension of a (possibly Windows-style) uploaded file name, '' when there is none."""
    if not filename:
        return ""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


# --- JSON Lines and JSON arrays ----------------------------------------------------------------------------------


def jsonl_records(text: str, error: type[FileFormatError]) -> Iterator[tuple[object, Where]]:
    """One JSON value per line; blank lines are skipped but still counted, so line numbers match an editor.

    A generator, so that each record is validated before the next line is decoded: the first bad record is
    reported even if the file also has a syntax error further down.
    """
    for number, line in enumerate(_LINE_BREAK_RE.split(text), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"invalid JSON: {exc.msg} (column {exc.colno})", line=number) from None
        except RecursionError:
            raise error("invalid JSON: nested too deeply", line=number) from None
        yield value, Where(number, error_class=error)


def json_array_records(text: str, error: type[FileFormatError]) -> Iterator[tuple[object, Where]]:
    """The elements of a JSON array one at a time, each with the line it starts on and its position.

    `text` must start, after whitespace, with '[' (see `first_char`). json.loads would give the elements but not
    their lines, and an error saying "record 812" is much less useful than "line 4870" in a pretty-printed file.
    A generator, so that each element is validated before the next is decoded: the first bad element is reported
    even if the file also has a syntax error further down.
    """
    decoder = json.JSONDecoder()
    pos = _skip_json_ws(text, text.index("[") + 1)
    line, counted_to, record = 1, 0, 0
    if not text.startswith("]", pos):
        while True:
            line += text.count("\n", counted_to, pos)
            counted_to = pos
            try:
                value, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise error(f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
            except RecursionError:
                raise error("invalid JSON: nested too deeply", line=line) from None
            record += 1
            yield value, Where(line, record, error_class=error)
            pos = _skip_json_ws(text, end)
            if text.startswith(",", pos):
                pos = _skip_json_ws(text, pos + 1)
            elif text.startswith("]", pos):
                break
            else:
                raise _json_syntax_error(text, pos, "expecting ',' or ']' after an array element", error)
    # Only whitespace may follow the closing bracket; anything else means the file is not what it seems.
    pos = _skip_json_ws(text, pos + 1)
    if pos != len(text):
        raise _json_syntax_error(text, pos, "extra data after the JSON array", error)


def _skip_json_ws(text: str, pos: int) -> int:
    match = _JSON_WS_RE.match(text, pos)
    return match.end() if match else pos


def _json_syntax_error(text: str, pos: int, reason: str, error: type[FileFormatError]) -> FileFormatError:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return error(f"invalid JSON: {reason} (column {column})", line=line)


# --- field values ------------------------------------------------------------------------------------------------


def text_field(
    value: object, field: str, where: Where, *, required: bool, max_chars: int = MAX_FIELD_CHARS
) -> str:
    """A stripped string within the limits; `required` also rejects one that is empty after stripping."""
    if not isinstance(value, str):
        expected = "a non-empty string" if required else "a string"
        raise where.error(field, f"must be {expected}, got {json_type(value)}")
    text = value.strip()
    if required and not text:
        raise where.error(field, "must be a non-empty string")
    if len(text) > max_chars:
        raise where.error(field, f"is {len(text):,} characters long; the limit is {max_chars:,}")
    if _UNSTORABLE_RE.search(text):
        raise where.error(field, "contains a NUL character or an unpaired surrogate, which cannot be stored")
    return text


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages read by people who wrote JSON, not Python."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
