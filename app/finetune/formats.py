"""What an exported item looks like in each format, and the streaming encoders that write them. Pure: no I/O.

Formats (one record per approved item, in item order):
- Alpaca JSON: a JSON array of ``{"instruction", "input", "output"}``.
- ShareGPT JSON: a JSON array of ``{"conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}``.
- OpenAI chat JSONL: one ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`` per line (what
  OpenAI's fine-tuning API and Sprout's own trainer read).

ShareGPT's human turn and OpenAI's user message carry the instruction followed by a blank line and the input
when there is one.

Item text is model output, untrusted: it only ever reaches a file as a JSON string made by the JSON encoder.
On top of JSON's own escaping, ``<``, ``>``, ``&`` and the line separators U+2028/U+2029 are written as
``\\uXXXX`` escapes, so a file pasted into a web page or a script cannot close a tag or a string there; every
JSON reader decodes them back to the same text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

TextFormat = Literal["alpaca", "sharegpt", "openai"]
TEXT_FORMATS: tuple[TextFormat, ...] = ("alpaca", "sharegpt", "openai")
Split = Literal["train", "validation"]
SPLITS: tuple[Split, ...] = ("train", "validation")

EXTENSIONS = {"alpaca": ".json", "sharegpt": ".json", "openai": ".jsonl", "parquet": ".parquet"}
MEDIA_TYPES = {
    "alpaca": "application/json",
    "sharegpt": "application/json",
    "openai": "application/jsonl",
    "parquet": "application/vnd.apache.parquet",
}
CHUNK_BYTES = 64 * 1024  # what the encoders gather before yielding: few, not huge, writes

_SAFE = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """One item as exported: a live approved item, or a snapshot's copy of one (with its split)."""

    instruction: str
    input: str = ""
    output: str = ""
    language: str = "other"
    model: str | None = None
    item_id: int | None = None
    split: Split | None = None


def prompt_text(record: ExportRecord) -> str:
    """The user's turn: the instruction, and the input after a blank line when there is one."""
    return f"{record.instruction}\n\n{record.input}" if record.input else record.instruction


def alpaca_record(record: ExportRecord) -> dict[str, Any]:
    return {"instruction": record.instruction, "input": record.input, "output": record.output}


def sharegpt_record(record: ExportRecord) -> dict[str, Any]:
    return {
        "conversations": [
            {"from": "human", "value": prompt_text(record)},
            {"from": "gpt", "value": record.output},
        ]
    }


def openai_record(record: ExportRecord) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": prompt_text(record)},
            {"role": "assistant", "content": record.output},
        ]
    }


def file_stem(name: str, *, ascii_only: bool = False) -> str:
    """A dataset's name as part of a file name: letters, digits, '.', '_' and '-' (ASCII ones only if asked), other
    runs of characters as one '-', no leading dot; "dataset" when nothing is left."""
    pattern = r"[^A-Za-z0-9._-]+" if ascii_only else r"[^\w.-]+"
    stem = re.sub(pattern, "-", name, flags=re.ASCII if ascii_only else 0).strip("-.")[:100].strip("-.")
    return stem or "dataset"


CONVERTERS = {"alpaca": alpaca_record, "sharegpt": sharegpt_record, "openai": openai_record}


def table_row(record: ExportRecord, *, with_split: bool = False) -> dict[str, Any]:
    """A row of the parquet file and the Hugging Face dataset (columns: see `TABLE_COLUMNS`)."""
    row = {
        "item_id": record.item_id,
        "instruction": record.instruction,
        "input": record.input,
        "output": record.output,
        "language": record.language,
        "model": record.model,
    }
    if with_split:
        row["split"] = record.split
    return row


TABLE_COLUMNS = ("item_id", "instruction", "input", "output", "language", "model")


def _escaped(text: str) -> str:
    # Outside strings JSON has none of these characters, so replacing them everywhere only touches string content
    # (str.replace: a C scan per character class, many times faster than str.translate).
    for raw, escape in _SAFE:
        if raw in text:
            text = text.replace(raw, escape)
    return text


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8, with the HTML-significant characters escaped (see the module's docstring)."""
    try:
        return _escaped(json.dumps(value, ensure_ascii=False, separators=(",", ":"))).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (stored text is cleaned of them, but never fail an export)
        return _escaped(json.dumps(value, ensure_ascii=True, separators=(",", ":"))).encode("ascii")


def canonical_line(record: ExportRecord) -> bytes:
    """One record as the content hash sees it: every copied field, in a fixed order, one line."""
    fields = [record.item_id, record.split, record.instruction, record.input, record.output]
    return dumps([*fields, record.language, record.model]) + b"\n"


def gather(parts: Iterable[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Join small pieces into chunks of about `size` bytes (the last may be smaller; none is empty)."""
    buffer: list[bytes] = []
    held = 0
    for part in parts:
        buffer.append(part)
        held += len(part)
        if held >= size:
            yield b"".join(buffer)
            buffer, held = [], 0
    if buffer:
        yield b"".join(buffer)


def json_array(values: Iterable[Any]) -> Iterator[bytes]:
    """A JSON array written element by element, one element per line: the whole parses with json.loads."""
    first = True
    for value in values:
        yield (b"[\n" if first else b",\n") + dumps(value)
        first = False
    yield b"[]\n" if first else b"\n]\n"


def json_lines(values: Iterable[Any]) -> Iterator[bytes]:
    for value in values:
        yield dumps(value) + b"\n"


def encode(
    fmt: TextFormat, records: Iterable[ExportRecord], *, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[bytes]:
    """The records in `fmt`, as chunks of bytes, reading `records` only as fast as the chunks are taken."""
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(TEXT_FORMATS)}")
    convert = CONVERTERS[fmt]
    converted = (convert(record) for record in records)
    parts = json_lines(converted) if fmt == "openai" else json_array(converted)
    return gather(parts, chunk_bytes)
