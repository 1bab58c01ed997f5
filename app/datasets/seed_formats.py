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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from app.core.upload_formats import (
    MAX_FIELD_CHARS,
    FileFormatError,
    Where,
    decode,
    extension,
    first_char,
    json_array_records,
    json_type,
    jsonl_records,
    text_field,
)

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_NAME_CHARS",
    "SeedFileFormat",
    "SeedFormatError",
    "SeedInstance",
    "SeedTaskIn",
    "dump_self_instruct_jsonl",
    "parse_seed_file",
]

SeedFileFormat = Literal["auto", "self_instruct", "alpaca", "csv"]
_Container = Literal["jsonl", "json_array", "csv"]

MAX_NAME_CHARS = 200
"""Most characters a name or id may hold: the width of the seed_task.name and seed_task.source_id columns."""

_FORMATS: frozenset[str] = frozenset({"auto", "self_instruct", "alpaca", "csv"})
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


class SeedFormatError(FileFormatError):
    """A seed file that cannot be imported, with where (line, field) so the user can fix it in an editor.

    `line` is 1-based (see the module docstring for what it points at in each format), `record` is the element's
    1-based position in a JSON array (None for other formats), `field` is the offending field such as
    ``instruction`` or ``instances[0].output`` (None when the whole line is wrong), `reason` is the bare message.
    """


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
    text = decode(data, SeedFormatError)
    if not text.strip():
        raise SeedFormatError("no seed tasks found: the file is empty")
    container = _choose_container(text, filename, format)
    if container == "csv":
        tasks = _parse_csv(text)
    elif container == "json_array":
        tasks = [_task_from_record(v, w) for v, w in json_array_records(text, SeedFormatError)]
    else:
        tasks = [_task_from_record(v, w) for v, w in jsonl_records(text, SeedFormatError)]
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


# --- format detection --------------------------------------------------------------------------------------------


def _choose_container(text: str, filename: str | None, format: SeedFileFormat) -> _Container:
    """Extension first (users name files deliberately), then content (uploads from scripts often have no name)."""
    if format == "csv":
        return "csv"
    first = first_char(text)
    json_container: _Container = "json_array" if first == "[" else "jsonl"
    if format in ("self_instruct", "alpaca"):
        return json_container
    suffix = extension(filename)
    if suffix == "csv":
        return "csv"
    if suffix in ("json", "jsonl") or first in ("[", "{"):
        return json_container
    return "csv"


# --- records -----------------------------------------------------------------------------------------------------


def _task_from_record(value: object, where: Where) -> SeedTaskIn:
    """Validate one record of either shape (Self-Instruct with instances, or flat Alpaca) into a task."""
    if not isinstance(value, dict):
        raise where.error(None, f"expected a JSON object, got {json_type(value)}")
    if "instruction" not in value:
        raise where.error("instruction", "is missing")
    instruction = text_field(value["instruction"], "instruction", where, required=True)
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


def _instances(value: object, where: Where) -> tuple[SeedInstance, ...]:
    if not isinstance(value, list):
        raise where.error("instances", f"must be a list of objects, got {json_type(value)}")
    if not value:
        raise where.error("instances", "must hold at least one instance")
    return tuple(_instance(item, f"instances[{i}]", where) for i, item in enumerate(value))


def _instance(value: object, path: str, where: Where) -> SeedInstance:
    """One input/output pair; `path` is '' for a flat Alpaca record, 'instances[i]' inside a Self-Instruct one."""
    if not isinstance(value, dict):
        raise where.error(path, f"must be an object with input and output, got {json_type(value)}")
    prefix = f"{path}." if path else ""
    if "output" not in value:
        hint = "" if path else " (give 'output', or 'instances' as a list of input/output objects)"
        raise where.error(f"{prefix}output", "is missing" + hint)
    raw_input = value.get("input")
    return SeedInstance(
        input="" if raw_input is None else text_field(raw_input, f"{prefix}input", where, required=False),
        output=text_field(value["output"], f"{prefix}output", where, required=True),
    )


def _optional_text(value: object, field: str, where: Where) -> str | None:
    """Names and ids are optional: missing, null and blank all mean 'not given'."""
    if value is None:
        return None
    return text_field(value, field, where, required=False, max_chars=MAX_NAME_CHARS) or None


def _source_id(value: object, where: Where) -> str | None:
    """Ids are kept as text; integer ids (common in exported datasets) are accepted and converted."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _optional_text(value, "id", where)


def _flag(value: object, where: Where) -> bool:
    """JSON must say true or false (missing or null mean false); strings like "no" are too easy to misread."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise where.error("is_classification", f"must be true or false, got {json_type(value)}")
    return value


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
        where = Where(line, error_class=SeedFormatError)
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


def _csv_flag(cell: str, where: Where) -> bool:
    """CSV has no booleans, so accept the spellings spreadsheets and people use; an empty cell means false."""
    value = _CSV_BOOLEANS.get(cell.strip().lower())
    if value is None:
        raise where.error("is_classification", f"must be true/false, 1/0 or yes/no, got {cell.strip()!r}")
    return value
