"""Parse uploaded seed-task files into plain seed tasks, and write them back as Self-Instruct JSONL.

Accepted formats (see `parse_seed_file`):

- Self-Instruct JSON Lines: one object per line with ``instruction`` and ``instances`` (a list of
  ``{"input", "output"}`` objects), optionally ``is_classification``, ``name`` and ``id``.
- Alpaca: a JSON array of ``{"instruction", "input", "output"}`` objects (``input`` optional), or the same objects
  one per line (JSONL). A JSONL file may mix both record shapes: a record with ``instances`` is read as
  Self-Instruct (any top-level ``input``/``output`` is then ignored), any other record as Alpaca.
- CSV with a header row: ``instruction`` and ``output`` columns are required, ``input``, ``is_classification``
  (true/false, 1/0, yes/no, any case; empty means false), ``name`` and ``id`` are optional. One row is one task with
  one instance. Fields may be quoted and span several lines.

Uploaded seeds are untrusted, so the parser is strict and all-or-nothing: the first bad record raises
`SeedFormatError` naming its line and field, and nothing is returned. A half-imported file is worse than a rejected
one, since the user cannot tell which of their tasks made it in.

Where an error points (`SeedFormatError.line`, 1-based):

- JSONL and CSV: the physical line on which the record starts (blank lines count, so it matches an editor).
- JSON array: the line on which the element starts; `SeedFormatError.record` also gives the element's 1-based
  position in the array, since a one-line array has every element on line 1.
- Invalid UTF-8: the line holding the first bad byte; the message also gives its byte offset.

Normalisation is deliberately minimal: text fields are stripped at both ends, inner whitespace and newlines are
kept (seed outputs are shown to the model verbatim), and unknown fields are ignored.

Limits, which protect the database and the prompt budget: instruction, input and output may hold at most
`MAX_FIELD_CHARS` characters after stripping, name and id at most `MAX_NAME_CHARS` (the width of their database
columns), and no field may contain NUL or unpaired surrogate characters (PostgreSQL text columns and UTF-8
encoders reject them). The size of the whole file is the caller's
limit to enforce (the upload endpoint), since it is checked before the bytes reach this module.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

SeedFileFormat = Literal["auto", "self_instruct", "alpaca", "csv"]
_Container = Literal["jsonl", "json_array", "csv"]

MAX_FIELD_CHARS = 20_000
"""Most characters an instruction, input or output may hold; longer is almost surely a broken file, not a task."""
MAX_NAME_CHARS = 200
"""Most characters a name or id may hold: the width of the seed_task.name and seed_task.source_id columns."""

_FORMATS: frozenset[str] = frozenset({"auto", "self_instruct", "alpaca", "csv"})
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")
_LINE_BREAK_BYTES_RE = re.compile(rb"\r\n|\r|\n")
_JSON_WS_RE = re.compile(r"[ \t\n\r]*")
_FIRST_CHAR_RE = re.compile(r"\s*(\S)")
_UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")
_CSV_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}
_CSV_COLUMNS = ("instruction", "input", "output", "is_classification", "name", "id")
# Characters json.dumps leaves raw that some JSONL readers (str.splitlines, editors) treat as line breaks.
_JSONL_UNSAFE = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


@dataclass(frozen=True, slots=True)
class SeedInstance:
    """One worked example of a seed task; input may be empty, output never is."""

    input: str
    output: str


@dataclass(frozen=True, slots=True)
class SeedTaskIn:
    """A seed task as read from a file, before it gets a database id (source_id is the file's own id)."""

    instruction: str
    instances: tuple[SeedInstance, ...]
    is_classification: bool = False
    name: str | None = None
    source_id: str | None = None


class SeedFormatError(ValueError):
    """A seed file that cannot be imported, with where (line, field) so the user can fix it in an editor.

    `line` is 1-based (see the module docstring for what it points at in each format), `record` is the element's
    1-based position in a JSON array (None for other formats), `field` is the offending field such as
    ``instruction`` or ``instances[0].output`` (None when the whole line is wrong), `reason` is the bare message.
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
class _Where:
    """Location of the record being validated, so field checks can raise precise errors."""

    line: int | None
    record: int | None = None

    def error(self, field: str | None, reason: str) -> SeedFormatError:
        return SeedFormatError(reason, line=self.line, field=field, record=self.record)


def parse_seed_file(
    data: bytes | str, *, filename: str | None = None, format: SeedFileFormat = "auto"
) -> list[SeedTaskIn]:
    """Parse a whole seed file into tasks, or raise SeedFormatError for its first bad record.

    `filename` is only used for its extension when `format` is "auto": .csv means CSV, .json and .jsonl mean JSON
    (an array if the text starts with "[", JSON Lines otherwise); without a known extension the content decides:
    "[" is a JSON array, "{" is JSON Lines, anything else CSV. "self_instruct" and "alpaca" both mean JSON (array or
    lines, by the first character), since each record's shape is recognised on its own; "csv" forces CSV.
    """
    if format not in _FORMATS:
        raise ValueError(f"unknown seed file format {format!r}; expected one of {sorted(_FORMATS)}")
    text = _decode(data)
    if not text.strip():
        raise SeedFormatError("no seed tasks found: the file is empty")
    container = _choose_container(text, filename, format)
    if container == "csv":
        tasks = _parse_csv(text)
    elif container == "json_array":
        tasks = _parse_json_array(text)
    else:
        tasks = _parse_jsonl(text)
    if not tasks:
        raise SeedFormatError("no seed tasks found")
    return tasks


def dump_self_instruct_jsonl(tasks: Iterable[SeedTaskIn]) -> str:
    """Write tasks as Self-Instruct JSONL that `parse_seed_file` reads back to equal tasks.

    `id` and `name` are written only when set, so a round trip does not invent them. Non-ASCII text stays
    readable (Chinese seeds are meant to be edited by people), except the few characters that some tools take
    for line breaks, which are escaped so that every record stays on one line.
    """
    out = []
    for task in tasks:
        record: dict[str, object] = {}
        if task.source_id is not None:
            record["id"] = task.source_id
        if task.name is not None:
            record["name"] = task.name
        record["instruction"] = task.instruction
        record["instances"] = [{"input": inst.input, "output": inst.output} for inst in task.instances]
        record["is_classification"] = task.is_classification
        line = json.dumps(record, ensure_ascii=False)
        for raw, escaped in _JSONL_UNSAFE.items():
            line = line.replace(raw, escaped)
        out.append(line + "\n")
    return "".join(out)


# --- decoding and format detection -------------------------------------------------------------------------------


def _decode(data: bytes | str) -> str:
    """UTF-8 with or without BOM; Excel and Windows Notepad add the BOM, which must not leak into a header."""
    if isinstance(data, str):
        text = data
    else:
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = len(_LINE_BREAK_BYTES_RE.findall(raw, 0, exc.start)) + 1
            raise SeedFormatError(
                f"invalid UTF-8 at byte offset {exc.start}; save the file as UTF-8", line=line
            ) from None
    return text.removeprefix("\ufeff")


def _choose_container(text: str, filename: str | None, format: SeedFileFormat) -> _Container:
    """Extension first (users name files deliberately), then content (uploads from scripts often have no name)."""
    if format == "csv":
        return "csv"
    match = _FIRST_CHAR_RE.match(text)
    first = match.group(1) if match else ""
    json_container: _Container = "json_array" if first == "[" else "jsonl"
    if format in ("self_instruct", "alpaca"):
        return json_container
    extension = _extension(filename)
    if extension == "csv":
        return "csv"
    if extension in ("json", "jsonl") or first in ("[", "{"):
        return json_container
    return "csv"


def _extension(filename: str | None) -> str:
    """Lower-case extension of a (possibly Windows-style) uploaded file name, '' when there is none."""
    if not filename:
        return ""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


# --- JSON Lines and JSON arrays ----------------------------------------------------------------------------------


def _parse_jsonl(text: str) -> list[SeedTaskIn]:
    """One JSON object per line; blank lines are skipped but still counted, so line numbers match an editor."""
    tasks = []
    for number, line in enumerate(_LINE_BREAK_RE.split(text), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SeedFormatError(f"invalid JSON: {exc.msg} (column {exc.colno})", line=number) from None
        except RecursionError:
            raise SeedFormatError("invalid JSON: nested too deeply", line=number) from None
        tasks.append(_task_from_record(value, _Where(number)))
    return tasks


def _parse_json_array(text: str) -> list[SeedTaskIn]:
    """Decode the array one element at a time, to know the line each element starts on.

    json.loads would give the elements but not their lines, and an error saying "record 812" is much less useful
    than "line 4870" in a pretty-printed file. Elements are validated in order, so the first bad one is reported
    even if the file also has a syntax error further down.
    """
    decoder = json.JSONDecoder()
    pos = _skip_json_ws(text, text.index("[") + 1)
    tasks: list[SeedTaskIn] = []
    line, counted_to = 1, 0
    if text.startswith("]", pos):
        return _expect_json_end(text, pos + 1, tasks)
    while True:
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise SeedFormatError(f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
        except RecursionError:
            raise SeedFormatError("invalid JSON: nested too deeply", line=line) from None
        tasks.append(_task_from_record(value, _Where(line, record=len(tasks) + 1)))
        pos = _skip_json_ws(text, end)
        if text.startswith(",", pos):
            pos = _skip_json_ws(text, pos + 1)
        elif text.startswith("]", pos):
            return _expect_json_end(text, pos + 1, tasks)
        else:
            raise _json_syntax_error(text, pos, "expecting ',' or ']' after an array element")


def _skip_json_ws(text: str, pos: int) -> int:
    match = _JSON_WS_RE.match(text, pos)
    return match.end() if match else pos


def _expect_json_end(text: str, pos: int, tasks: list[SeedTaskIn]) -> list[SeedTaskIn]:
    """Only whitespace may follow the closing bracket; anything else means the file is not what it seems."""
    pos = _skip_json_ws(text, pos)
    if pos != len(text):
        raise _json_syntax_error(text, pos, "extra data after the JSON array")
    return tasks


def _json_syntax_error(text: str, pos: int, reason: str) -> SeedFormatError:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return SeedFormatError(f"invalid JSON: {reason} (column {column})", line=line)


# --- records -----------------------------------------------------------------------------------------------------


def _task_from_record(value: object, where: _Where) -> SeedTaskIn:
    """Validate one record of either shape (Self-Instruct with instances, or flat Alpaca) into a task."""
    if not isinstance(value, dict):
        raise where.error(None, f"expected a JSON object, got {_json_type(value)}")
    if "instruction" not in value:
        raise where.error("instruction", "is missing")
    instruction = _text(value["instruction"], "instruction", where, required=True)
    if "instances" in value:
        instances = _instances(value["instances"], where)
    else:
        instances = (_instance(value, "", where),)
    return SeedTaskIn(
        instruction=instruction,
        instances=instances,
        is_classification=_flag(value.get("is_classification"), where),
        name=_optional_text(value.get("name"), "name", where),
        source_id=_source_id(value.get("id"), where),
    )


def _instances(value: object, where: _Where) -> tuple[SeedInstance, ...]:
    if not isinstance(value, list):
        raise where.error("instances", f"must be a list of objects, got {_json_type(value)}")
    if not value:
        raise where.error("instances", "must hold at least one instance")
    return tuple(_instance(item, f"instances[{i}]", where) for i, item in enumerate(value))


def _instance(value: object, path: str, where: _Where) -> SeedInstance:
    """One input/output pair; `path` is '' for a flat Alpaca record, 'instances[i]' inside a Self-Instruct one."""
    if not isinstance(value, dict):
        raise where.error(path, f"must be an object with input and output, got {_json_type(value)}")
    prefix = f"{path}." if path else ""
    if "output" not in value:
        hint = "" if path else " (give 'output', or 'instances' as a list of input/output objects)"
        raise where.error(f"{prefix}output", "is missing" + hint)
    raw_input = value.get("input")
    return SeedInstance(
        input="" if raw_input is None else _text(raw_input, f"{prefix}input", where, required=False),
        output=_text(value["output"], f"{prefix}output", where, required=True),
    )


def _text(
    value: object, field: str, where: _Where, *, required: bool, max_chars: int = MAX_FIELD_CHARS
) -> str:
    """A stripped string within the limits; `required` also rejects one that is empty after stripping."""
    if not isinstance(value, str):
        expected = "a non-empty string" if required else "a string"
        raise where.error(field, f"must be {expected}, got {_json_type(value)}")
    text = value.strip()
    if required and not text:
        raise where.error(field, "must be a non-empty string")
    if len(text) > max_chars:
        raise where.error(field, f"is {len(text):,} characters long; the limit is {max_chars:,}")
    if _UNSTORABLE_RE.search(text):
        raise where.error(field, "contains a NUL character or an unpaired surrogate, which cannot be stored")
    return text


def _optional_text(value: object, field: str, where: _Where) -> str | None:
    """Names and ids are optional: missing, null and blank all mean 'not given'."""
    if value is None:
        return None
    return _text(value, field, where, required=False, max_chars=MAX_NAME_CHARS) or None


def _source_id(value: object, where: _Where) -> str | None:
    """Ids are kept as text; integer ids (common in exported datasets) are accepted and converted."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _optional_text(value, "id", where)


def _flag(value: object, where: _Where) -> bool:
    """JSON must say true or false (missing or null mean false); strings like "no" are too easy to misread."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise where.error("is_classification", f"must be true or false, got {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
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


# --- CSV ---------------------------------------------------------------------------------------------------------


def _parse_csv(text: str) -> list[SeedTaskIn]:
    """Header row first (column names are case-insensitive), then one task per non-blank row."""
    rows = _csv_rows(text)
    header = next(rows, None)
    if header is None:
        return []
    header_line, header_cells = header
    columns = _csv_columns(header_cells, header_line)
    tasks = []
    for line, cells in rows:
        where = _Where(line)
        if len(cells) > len(header_cells) and any(c.strip() for c in cells[len(header_cells) :]):
            raise where.error(
                None,
                f"row has {len(cells)} cells but the header has {len(header_cells)}; "
                "quote fields that contain commas",
            )
        record: dict[str, object] = {name: cells[i] if i < len(cells) else "" for name, i in columns.items()}
        record["is_classification"] = _csv_flag(str(record.get("is_classification", "")), where)
        tasks.append(_task_from_record(record, where))
    return tasks


def _csv_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows with the line each starts on; quoted fields may span lines, so count from the reader."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    last_line = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise SeedFormatError(f"malformed CSV: {exc}", line=last_line + 1) from None
        start, last_line = last_line + 1, reader.line_num
        if any(cell.strip() for cell in cells):
            yield start, cells


def _csv_columns(cells: list[str], line: int) -> dict[str, int]:
    """Map the known column names to their positions; other columns are ignored like unknown JSON fields."""
    columns: dict[str, int] = {}
    for i, cell in enumerate(cells):
        name = cell.strip().lower()
        if name not in _CSV_COLUMNS:
            continue
        if name in columns:
            raise SeedFormatError("the CSV header names this column twice", line=line, field=name)
        columns[name] = i
    for required in ("instruction", "output"):
        if required not in columns:
            found = ", ".join(repr(c.strip()) for c in cells)
            raise SeedFormatError(
                f"the CSV header has no {required!r} column (found {found})", line=line, field=required
            )
    return columns


def _csv_flag(cell: str, where: _Where) -> bool:
    """CSV has no booleans, so accept the spellings spreadsheets and people use; an empty cell means false."""
    value = _CSV_BOOLEANS.get(cell.strip().lower())
    if value is None:
        raise where.error("is_classification", f"must be true/false, 1/0 or yes/no, got {cell.strip()!r}")
    return value
