"""Turn a model's raw reply into candidate items, counting what could not be used.

Pure and forgiving: a weak model's formatting is noisy, so labels may carry markdown bold, full-width colons,
Chinese names or no number at all. What is never guessed is structure: a numbered item needs its instruction,
input and output labels, a JSON task needs "instruction" and "output". Content problems (an empty output, an
input equal to the output) are left to app.generation.filters, which keeps the item with a reason a reviewer can
read.

Counting: `ParseResult.unparsed` is the number of items (numbered chunks or JSON elements) that were started
but could not be used, including one cut off by max_tokens. Blank chunks and stop-sequence remnants ("5."
alone) are not items and are not counted.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from typing import Any

from app.generation.candidates import CandidateItem, ParseResult

# --- shared clean-up ----------------------------------------------------------------------------------------

# Special tokens a server sometimes leaves in the text (<|im_end|>, <|endoftext|>, </s>): nothing after one
# of them belongs to this reply.
_SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>|</s>")


def _cut_at_special_token(text: str) -> str:
    match = _SPECIAL_TOKEN_RE.search(text)
    return text if match is None else text[: match.start()]


# --- numbered lists (completions mode) ----------------------------------------------------------------------
#
# Read line by line with plain string operations rather than one big regex: model output can hold long runs of
# spaces, "*" or "#", and a pattern with several optional, overlapping parts backtracks for ages on those.

_NAME_RE = re.compile(r"instructions?|inputs?|outputs?|指令|输入|输出", re.IGNORECASE)
_KINDS = {
    "instruction": "instruction",
    "instructions": "instruction",
    "指令": "instruction",
    "input": "input",
    "inputs": "input",
    "输入": "input",
    "output": "output",
    "outputs": "output",
    "输出": "output",
}
_ORDER = ("instruction", "input", "output")
_ORDER_WITHOUT_INPUT = ("instruction", "output")
# The no-input marker in its spellings: <noinput>, <no input>, noinput, <无输入>, （无输入）, 无输入.
_NO_INPUT_RE = re.compile(r"[<(（\[【]?[ \t]*(?:no[ _-]?input|无输入)[ \t]*[>)）\]】]?[.。]?", re.IGNORECASE)
_NUMBER_MARKS = ".．、)"
_BOLD_AND_SPACE = " \t*_"


def _read_label(line: str) -> tuple[str, str] | None:
    """(kind, text after the label) when the line starts with a field label, else None.

    Accepted around the name: bullets, "#", ">", markdown bold, a number with "." "．" "、" or ")", and
    spaces; after it a half- or full-width colon. So "4. **Output**:", "**Input:**", "- 输出：" and
    "Instruction :" all count.
    """
    rest = line.lstrip(" \t-*>#_")
    digits = len(rest) - len(rest.lstrip("0123456789"))
    if digits:
        rest = rest[digits:].lstrip(" \t")
        if rest[:1] and rest[0] in _NUMBER_MARKS:
            rest = rest[1:]
        rest = rest.lstrip(_BOLD_AND_SPACE)
    name = _NAME_RE.match(rest)
    if name is None:
        return None
    rest = rest[name.end() :].lstrip(_BOLD_AND_SPACE)
    if rest[:1] not in (":", "："):
        return None
    value = rest[1:].lstrip(" \t")
    if value == "**" or value.startswith("** "):  # the closing bold of "**Input:** text"
        value = value[2:].lstrip(" \t")
    return _KINDS[name.group(0).casefold()], value


def _is_separator(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 3 and stripped.strip("#") == ""


@dataclass(slots=True)
class _Chunk:
    """One item's worth of lines: text before any label, then each label with the lines that follow it."""

    preamble: list[str] = field(default_factory=list)
    fields: list[tuple[str, list[str]]] = field(default_factory=list)

    def add(self, line: str) -> None:
        if self.fields:
            self.fields[-1][1].append(line)
        else:
            self.preamble.append(line)

    def is_remnant(self) -> bool:
        """Nothing but a number and perhaps an empty instruction label: what a stop sequence leaves behind."""
        stray = "".join(self.preamble).strip(f" \t\r#0123456789{_NUMBER_MARKS}")
        if stray:
            return False
        if not self.fields:
            return True
        (kind, lines), *others = self.fields
        return not others and kind == "instruction" and not "".join(lines).strip(" \t\r#")


def _split_chunks(text: str) -> list[_Chunk]:
    """A new chunk at every separator line and every instruction label (a model may forget separators)."""
    chunks = [_Chunk()]
    for line in text.split("\n"):
        if _is_separator(line):
            chunks.append(_Chunk())
            continue
        label = _read_label(line)
        if label is None:
            chunks[-1].add(line)
            continue
        kind, rest = label
        if kind == "instruction" and (chunks[-1].fields or chunks[-1].preamble):
            chunks.append(_Chunk())
        chunks[-1].fields.append((kind, [rest]))
    return chunks


def _clean_value(lines: list[str]) -> str:
    """Join a field's lines; strip whitespace, a separator glued to the end, and bold around the whole value.

    The label reader may have eaten the opening "**" of "Instruction: **Do this.**", so a lone closing "**"
    (or a lone opening one) is dropped as well; bold inside the text is left alone.
    """
    value = "\n".join(lines).strip()
    if value.endswith("###"):
        value = value.rstrip("#").rstrip()
    if value.count("**") == 1:
        value = value.removeprefix("**").removesuffix("**").strip()
    elif value.startswith("**") and value.endswith("**") and len(value) > 4 and value.count("**") == 2:
        value = value[2:-2].strip()
    return value


def _item_of(chunk: _Chunk) -> CandidateItem | None:
    """The chunk's item, or None when its labels are not instruction, input, output in that order.

    A chunk with only instruction and output is read as a task without input: models often leave out the empty
    "Input:" line, and the task is still whole.
    """
    kinds = tuple(kind for kind, _ in chunk.fields)
    if "".join(chunk.preamble).strip() or kinds not in (_ORDER, _ORDER_WITHOUT_INPUT):
        return None
    values = [_clean_value(lines) for _, lines in chunk.fields]
    if kinds == _ORDER_WITHOUT_INPUT:
        values.insert(1, "")
    instruction, task_input, output = values
    if not instruction:
        return None
    if _NO_INPUT_RE.fullmatch(task_input):
        task_input = ""
    return CandidateItem(instruction=instruction, input=task_input, output=output)


def parse_numbered_tasks(text: str, *, finish_reason: str | None, first_index: int) -> ParseResult:
    """Parse the continuation of a numbered-list prompt that ended with "<first_index>. Instruction:".

    The first item's instruction label is in the prompt, not in the text, so it is put back before splitting.
    With finish_reason "length" the last chunk is dropped (and counted) even if it looks whole: the model was
    cut and its output may be half a sentence. A last chunk that is empty (the text ended on a separator) or
    only a remnant ("5." or "5. Instruction:") is dropped without being counted: no item had started.
    """
    text = _cut_at_special_token(text).replace("\r\n", "\n")
    chunks = _split_chunks(f"{first_index}. Instruction:{text}")
    result = ParseResult()
    if finish_reason == "length" and not chunks[-1].is_remnant():
        result.unparsed += 1
    if finish_reason == "length":
        chunks.pop()
    for chunk in chunks:
        if chunk.is_remnant():
            continue
        item = _item_of(chunk)
        if item is None:
            result.unparsed += 1
        else:
            result.items.append(item)
    return result


# --- JSON (chat mode) ---------------------------------------------------------------------------------------


def _task_item_schema() -> dict[str, Any]:
    """One task. minLength keeps a constrained decoder from emitting the empty strings a weak model likes."""
    return {
        "type": "object",
        "properties": {
            "instruction": {"type": "string", "minLength": 1},
            "input": {"type": "string"},
            "output": {"type": "string", "minLength": 1},
        },
        "required": ["instruction", "input", "output"],
        "additionalProperties": False,
    }


def tasks_json_schema(max_items: int | None = None) -> dict[str, Any]:
    """The JSON schema of a chat-mode reply: {"tasks": [{instruction, input, output}, ...]}.

    With max_items the array is capped at the number of tasks asked for, so a constrained decoder cannot
    ramble on until max_tokens cuts it (and we lose the last item). Each call returns a new dict.
    """
    tasks: dict[str, Any] = {"type": "array", "items": _task_item_schema(), "minItems": 1}
    if max_items is not None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        tasks["maxItems"] = max_items
    return {
        "type": "object",
        "properties": {"tasks": tasks},
        "required": ["tasks"],
        "additionalProperties": False,
    }


TASKS_JSON_SCHEMA: dict[str, Any] = tasks_json_schema()

_FENCE_RE = re.compile(r"^[ \t]*```[A-Za-z0-9_-]*[ \t]*$", re.MULTILINE)
_TASKS_ARRAY_RE = re.compile(r'"tasks"\s*:\s*\[')
# strict=False: models write raw newlines and tabs inside strings, and constrained decoders let them.
_DECODER = json.JSONDecoder(strict=False)
# Decode errors: malformed JSON, and nesting deeper than the interpreter's recursion limit ("[[[[...").
_DECODE_ERRORS = (json.JSONDecodeError, RecursionError)
# How many "{" or "[" that start no JSON value are tried before giving up: prose has a few, never this many,
# and the cap keeps a reply of ten thousand brackets from costing seconds.
_MAX_FAILED_STARTS = 64


def _field(value: Any) -> str | None:
    """A JSON field as text: strings as they are, numbers written out, anything else is unusable."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    return None


def _task_from_json(element: Any) -> CandidateItem | None:
    """A task needs a non-blank instruction and an output; a missing or null input means "no input"."""
    if not isinstance(element, dict) or "output" not in element:
        return None
    instruction = _field(element.get("instruction"))
    raw_input = element.get("input")
    task_input = "" if raw_input is None else _field(raw_input)
    output = _field(element["output"])
    if not instruction or task_input is None or output is None:
        return None
    return CandidateItem(instruction=instruction, input=task_input, output=output)


def _elements_of(value: Any) -> list[Any] | None:
    """The task elements of a decoded top-level value, or None when it is not a task container."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("tasks"), list):
            return value["tasks"]
        if "instruction" in value:
            return [value]
    return None


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and (text[pos].isspace() or text[pos] in chars):
        pos += 1
    return pos


def _salvage_array(text: str, pos: int) -> tuple[list[Any], bool]:
    """Decode array elements one by one from just after "[", stopping at the first that does not decode.

    Returns the complete elements and whether an element was cut (rather than the array closing or ending).
    """
    elements: list[Any] = []
    while True:
        pos = _skip(text, pos, ",")
        if pos >= len(text) or text[pos] == "]":
            return elements, False
        try:
            element, pos = _DECODER.raw_decode(text, pos)
        except _DECODE_ERRORS:
            return elements, True
        elements.append(element)


def _salvage(text: str, start: int, tasks_arrays: list[int]) -> tuple[list[Any], int]:
    """Elements that survive in a value that does not decode as a whole (cut by max_tokens or malformed).

    `tasks_arrays` holds where each '"tasks": [' of the text opens its array, in order.
    """
    if text[start] == "[":
        elements, cut = _salvage_array(text, start + 1)
        return elements, int(cut)
    following = bisect.bisect_left(tasks_arrays, start)
    if following < len(tasks_arrays):
        elements, cut = _salvage_array(text, tasks_arrays[following])
        return elements, int(cut)
    return [], 1


def _next_value_start(text: str, pos: int) -> int | None:
    starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
    return min(starts) if starts else None


def _collect_elements(text: str) -> tuple[list[Any], int]:
    """Every task element in the text, from one or more top-level JSON values, plus a count of lost ones.

    A "{" or "[" that starts no decodable value is either the JSON cut short (salvage its complete elements
    and stop) or prose such as "[see below]" (look further on). Non-task values ({"note": ...}) count as lost.
    """
    tasks_arrays = [match.end() for match in _TASKS_ARRAY_RE.finditer(text)]
    elements: list[Any] = []
    lost = 0
    failed = 0
    pos = 0
    while failed < _MAX_FAILED_STARTS and (start := _next_value_start(text, pos)) is not None:
        try:
            value, pos = _DECODER.raw_decode(text, start)
        except _DECODE_ERRORS:
            salvaged, cut = _salvage(text, start, tasks_arrays)
            if salvaged:
                return elements + salvaged, lost + cut
            failed += 1
            pos = start + 1
            continue
        found = _elements_of(value)
        if found is None:
            lost += 1
        else:
            elements.extend(found)
    if failed and not elements and not lost:
        lost = 1
    return elements, lost


def parse_json_tasks(text: str, *, finish_reason: str | None) -> ParseResult:
    """Parse a chat-mode reply: {"tasks": [...]}, a bare array, or task objects one after another.

    Code fences and chatter around the JSON are ignored. JSON that does not decode (cut by max_tokens, or
    broken) keeps the elements that are complete before the break; the broken one counts as unparsed. A reply
    with no JSON at all counts as one unparsed item. `finish_reason` does not change the outcome: salvage
    works the same for a cut reply and a malformed one, and a reply that decodes is complete whatever the
    reason says.
    """
    del finish_reason  # same behaviour either way; the argument keeps both parsers' signatures alike
    text = _FENCE_RE.sub("", _cut_at_special_token(text))
    elements, lost = _collect_elements(text)
    result = ParseResult(unparsed=lost)
    if not elements and not lost:
        result.unparsed = 1
    for element in elements:
        item = _task_from_json(element)
        if item is None:
            result.unparsed += 1
        else:
            result.items.append(item)
    return result
