"""The `validating_files` step: is a training (or validation) file something a chat model can be trained on?

Pure: lines in, the number of examples out, or FileValidationError naming the line. The token count of an
example is a function the caller passes (the base model's tokenizer and chat template), so the limit is the
model's own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from app.finetune.errors import FileValidationError

ROLES = frozenset({"system", "user", "assistant"})
TokenCounter = Callable[[list[dict[str, Any]]], int]


def check_example(value: Any) -> list[dict[str, Any]] | str:
    """The example's messages, or what is wrong with it."""
    if not isinstance(value, dict):
        return "an object with 'messages' was expected"
    messages = value.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{index}] is not an object"
        role = message.get("role")
        if role not in ROLES:
            return f"messages[{index}].role {role!r} is not one of {', '.join(sorted(ROLES))}"
        if not isinstance(message.get("content"), str):
            return f"messages[{index}].content must be a string"
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return "no assistant message with content (nothing to learn from)"
    return messages


def validate_examples(
    lines: Iterable[bytes],
    *,
    param: str,
    min_examples: int,
    context_length: int,
    count_tokens: TokenCounter | None = None,
) -> int:
    """Check every line; returns how many examples the file holds."""
    examples = 0
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FileValidationError(
                "invalid_file_format", f"line {line_no}: not JSON ({exc})", param
            ) from exc
        checked = check_example(value)
        if isinstance(checked, str):
            code = (
                "missing_assistant_message" if checked.startswith("no assistant") else "invalid_file_format"
            )
            raise FileValidationError(code, f"line {line_no}: {checked}", param)
        if count_tokens is not None:
            tokens = count_tokens(checked)
            if tokens > context_length:
                raise FileValidationError(
                    "exceeds_max_length",
                    f"line {line_no}: the example has {tokens} tokens; the model's context holds {context_length}",
                    param,
                )
        examples += 1
    if examples < min_examples:
        raise FileValidationError(
            "invalid_n_examples",
            f"the file holds {examples} example(s); at least {min_examples} are needed",
            param,
        )
    return examples
