"""Parse instruction-data files that users bring to clean and review into plain instruction/input/output items.

This is the sibling of `app.datasets.seed_formats` for instruction DATA rather than seed tasks, and it behaves the
same way: strict and all-or-nothing (the first bad record raises `ItemFormatError` naming its line and field, and
nothing is returned), the same line numbering, the same text limits and the same refusal of unstorable characters,
all from the plumbing both share in `app.core.upload_formats`.

Accepted record shapes (see `parse_item_file`), each in a JSON array or in JSON Lines (one record per line):

- Alpaca: ``{"instruction", "input", "output"}``. ``input`` is optional (missing or null mean ""); ``instruction``
  is required and must not be empty after stripping; ``output`` is required but may be empty: an item with an
  empty output is a record to drop with a reason (the filters' `empty_output`), not a broken file. Other fields
  are ignored.
- ShareGPT: ``{"conversations": [{"from": ..., "value": ...}, ...]}``. The first turn must be a ``human`` (or
  ``user``) turn and the second a ``gpt`` (or ``assistant``) reply: they become the item's instruction and output,
  and its input is "". Leading ``system`` turns are skipped and their text is dropped (an item has no place for a
  system prompt). Only the first exchange is read: any later turns are ignored, and not validated.
- OpenAI chat fine-tuning: ``{"messages": [{"role": ..., "content": ...}, ...]}``, read like ShareGPT with the roles
  ``user`` and ``assistant`` (leading ``system`` messages skipped, later messages ignored). ``content`` is a string,
  or a list of content parts; only ``{"type": "text", "text": ...}`` parts are accepted, and their texts are joined
  with a newline (an image or audio part cannot be turned into an instruction, so it is an error, not skipped).

With ``format="auto"`` the shape is decided by the first record: ``conversations`` means ShareGPT, else
``messages`` means OpenAI, else ``instruction`` means Alpaca. Every later record must have the same shape; the
first one that does not is reported. An explicit format skips the detection and reads every record in that shape.

The container (array or lines): a .jsonl or .ndjson file is always JSON Lines; any other file, .json included, is
a JSON array if its first non-space character is "[" and JSON Lines otherwise, so a .json file with one record
per line (as Hugging Face's `Dataset.to_json` writes by default) is read as the seed parser reads it.

Where an error points (`ItemFormatError.line`, 1-based), exactly as for seed files:

- JSON Lines: the physical line of the record (blank lines count, and CR, LF and CRLF all end a line).
- JSON array: the line on which the element starts; `ItemFormatError.record` also gives the element's 1-based
  position, since a one-line array has every element on line 1.
- Invalid UTF-8: the line holding the first bad byte; the message also gives its byte offset.

Limits: every field holds at most `MAX_FIELD_CHARS` characters after stripping (the seed limit), a file at most
`MAX_RECORDS` records, and no field may contain NUL or unpaired surrogate characters. Text is stripped at both
ends only. The size of the whole file is the caller's limit to enforce, before the bytes reach this module.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    "MAX_RECORDS",
    "ItemFileFormat",
    "ItemFormatError",
    "ItemIn",
    "parse_item_file",
]

ItemFileFormat = Literal["auto", "alpaca", "sharegpt", "openai"]
_Shape = Literal["alpaca", "sharegpt", "openai"]

MAX_RECORDS = 1_000_000
"""Most records one file may hold; more is beyond what one review can handle, and likely not one dataset."""

_FORMATS: frozenset[str] = frozenset({"auto", "alpaca", "sharegpt", "openai"})
# The key that marks each shape, in the order auto-detection tries them.
_SHAPE_KEYS: dict[_Shape, str] = {"sharegpt": "conversations", "openai": "messages", "alpaca": "instruction"}
_SHAPE_NAMES: dict[_Shape, str] = {"sharegpt": "ShareGPT", "openai": "OpenAI chat", "alpaca": "Alpaca"}
_LINES_EXTENSIONS = frozenset({"jsonl", "ndjson"})
_KEYS_SHOWN = 10


@dataclass(frozen=True, slots=True)
class ItemIn:
    """One instruction-data item as read from a file; `line` is where its record starts, for reports."""

    instruction: str
    input: str = ""
    output: str = ""
    line: int = 0


class ItemFormatError(FileFormatError):
    """An instruction-data file that cannot be imported, with where (line, field) so the user can fix it.

    Same attributes and message as `SeedFormatError`, since both are `FileFormatError`: `line` is 1-based (see the
    module docstring), `record` is the element's 1-based position in a JSON array (None for JSON Lines), `field` is
    the offending field such as ``output`` or ``messages[1].content`` (None when the whole record is wrong),
    `reason` is the bare message.
    """


@dataclass(frozen=True, slots=True)
class _Chat:
    """How one chat shape spells its turns, so ShareGPT and OpenAI records share one reader."""

    turns: str
    speaker: str
    text: str
    user: tuple[str, ...]
    assistant: tuple[str, ...]
    content_parts: bool


_CHATS: dict[_Shape, _Chat] = {
    "sharegpt": _Chat("conversations", "from", "value", ("human", "user"), ("gpt", "assistant"), False),
    "openai": _Chat("messages", "role", "content", ("user",), ("assistant",), True),
}
_SYSTEM = "system"


def parse_item_file(
    data: bytes | str, *, filename: str | None = None, format: ItemFileFormat = "auto"
) -> list[ItemIn]:
    """Parse a whole instruction-data file into items, or raise ItemFormatError for its first bad record.

    `filename` is only used for its extension, which picks the container (see the module docstring); `format` picks
    the record shape, "auto" meaning the shape of the first record.
    """
    if format not in _FORMATS:
        raise ValueError(f"unknown item file format {format!r}; expected one of {sorted(_FORMATS)}")
    text = decode(data, ItemFormatError)
    if not text.strip():
        raise ItemFormatError("no records found: the file is empty")
    shape: _Shape | None = None if format == "auto" else format
    items: list[ItemIn] = []
    for value, where in _records(text, filename):
        if len(items) >= MAX_RECORDS:
            raise where.error(None, f"too many records; the limit is {MAX_RECORDS:,} per file")
        if not isinstance(value, dict):
            raise where.error(None, f"expected a JSON object, got {json_type(value)}")
        if shape is None:
            shape = _detect_shape(value, where)
        items.append(_item(value, shape, where, detected=format == "auto"))
    if not items:
        raise ItemFormatError("no records found")
    return items


# --- containers --------------------------------------------------------------------------------------------------


def _records(text: str, filename: str | None) -> Iterator[tuple[object, Where]]:
    """The decoded records with their locations, from a JSON array or JSON Lines as the name or content says."""
    if extension(filename) not in _LINES_EXTENSIONS and first_char(text) == "[":
        return json_array_records(text, ItemFormatError)
    return jsonl_records(text, ItemFormatError)


# --- record shapes -----------------------------------------------------------------------------------------------


def _shape_of(record: dict[str, object]) -> _Shape | None:
    return next((shape for shape, key in _SHAPE_KEYS.items() if key in record), None)


def _detect_shape(record: dict[str, object], where: Where) -> _Shape:
    """The shape of the file, from its first record."""
    shape = _shape_of(record)
    if shape is None:
        keys = [repr(str(key)[:40]) for key in list(record)[:_KEYS_SHOWN]]
        found = (
            f"found {', '.join(keys)}{', ...' if len(record) > _KEYS_SHOWN else ''}" if keys else "found none"
        )
        raise where.error(
            None,
            "unknown record format: expected an 'instruction' (Alpaca), 'conversations' (ShareGPT) "
            f"or 'messages' (OpenAI chat) field ({found})",
        )
    return shape


def _item(record: dict[str, object], shape: _Shape, where: Where, *, detected: bool) -> ItemIn:
    key = _SHAPE_KEYS[shape]
    if key not in record:
        raise where.error(key, "is missing" + _other_shape_hint(record, shape, detected))
    if shape == "alpaca":
        return _alpaca_item(record, where)
    return _chat_item(record, _CHATS[shape], where)


def _other_shape_hint(record: dict[str, object], shape: _Shape, detected: bool) -> str:
    """Why a record lacks its shape's key, when it is because the record has another shape."""
    other = _shape_of(record)
    if other is None:
        return ""
    seen = f"this record is in {_SHAPE_NAMES[other]} format (it has {_SHAPE_KEYS[other]!r})"
    if detected:
        return f" ({seen}, but the file's first record is {_SHAPE_NAMES[shape]}; all records must have one format)"
    return f" ({seen}, but the file was read as {_SHAPE_NAMES[shape]})"


def _alpaca_item(record: dict[str, object], where: Where) -> ItemIn:
    instruction = text_field(record["instruction"], "instruction", where, required=True)
    raw_input = record.get("input")
    input_ = "" if raw_input is None else text_field(raw_input, "input", where, required=False)
    if "output" not in record:
        raise where.error("output", "is missing")
    output = text_field(record["output"], "output", where, required=False)
    return ItemIn(instruction, input_, output, line=where.line or 0)


def _chat_item(record: dict[str, object], chat: _Chat, where: Where) -> ItemIn:
    """The first user turn (after any system turns) and the assistant reply that must follow it."""
    turns = record[chat.turns]
    if not isinstance(turns, list):
        raise where.error(
            chat.turns, f"must be a list of {chat.speaker}/{chat.text} objects, got {json_type(turns)}"
        )
    first = 0
    while first < len(turns) and _speaker(turns[first], f"{chat.turns}[{first}]", chat, where) == _SYSTEM:
        first += 1
    if first == len(turns):
        raise where.error(
            chat.turns, f"must hold a {_names(chat.user)} turn followed by a {_names(chat.assistant)} reply"
        )
    prompt, reply = f"{chat.turns}[{first}]", f"{chat.turns}[{first + 1}]"
    speaker = _speaker(turns[first], prompt, chat, where)
    if speaker not in chat.user:
        raise where.error(
            f"{prompt}.{chat.speaker}",
            f"must be {_names(chat.user)} (the first turn after any system turn), got {speaker!r}",
        )
    instruction = _turn_text(turns[first], prompt, chat, where, required=True)
    if first + 1 == len(turns):
        raise where.error(
            reply, f"is missing: the {speaker} turn must be followed by a {_names(chat.assistant)} reply"
        )
    speaker = _speaker(turns[first + 1], reply, chat, where)
    if speaker not in chat.assistant:
        raise where.error(
            f"{reply}.{chat.speaker}",
            f"must be {_names(chat.assistant)} (the reply to the {_names(chat.user)} turn), got {speaker!r}",
        )
    output = _turn_text(turns[first + 1], reply, chat, where, required=False)
    return ItemIn(instruction, "", output, line=where.line or 0)


def _speaker(turn: object, path: str, chat: _Chat, where: Where) -> str:
    if not isinstance(turn, dict):
        raise where.error(
            path, f"must be an object with {chat.speaker!r} and {chat.text!r}, got {json_type(turn)}"
        )
    if chat.speaker not in turn:
        raise where.error(f"{path}.{chat.speaker}", "is missing")
    speaker = turn[chat.speaker]
    if not isinstance(speaker, str):
        raise where.error(f"{path}.{chat.speaker}", f"must be a string, got {json_type(speaker)}")
    return speaker


def _turn_text(turn: dict[str, object], path: str, chat: _Chat, where: Where, *, required: bool) -> str:
    field = f"{path}.{chat.text}"
    if chat.text not in turn:
        raise where.error(field, "is missing")
    value = turn[chat.text]
    if chat.content_parts and isinstance(value, list):
        value = "\n".join(_text_part(part, f"{field}[{i}]", where) for i, part in enumerate(value))
    return text_field(value, field, where, required=required)


def _text_part(part: object, path: str, where: Where) -> str:
    """The text of one OpenAI content part; other part types have no text to import."""
    if not isinstance(part, dict):
        raise where.error(
            path, f'must be a content part such as {{"type": "text", "text": ...}}, got {json_type(part)}'
        )
    if "type" not in part:
        raise where.error(f"{path}.type", "is missing")
    kind = part["type"]
    if kind != "text":
        got = repr(kind) if isinstance(kind, str) else json_type(kind)
        raise where.error(f"{path}.type", f"must be 'text', got {got}; only text parts can be imported")
    if "text" not in part:
        raise where.error(f"{path}.text", "is missing")
    text = part["text"]
    if not isinstance(text, str):
        raise where.error(f"{path}.text", f"must be a string, got {json_type(text)}")
    return text


def _names(names: tuple[str, ...]) -> str:
    return " or ".join(repr(name) for name in names)
