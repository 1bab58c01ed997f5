"""The JSON schema the real-model tests ask for: an object holding an array of {instruction, input, output}.

Lengths are bounded so a 135M model cannot ramble for minutes inside one string; the grammar enforces them.
"""

from __future__ import annotations

import json
from typing import Any


def tasks_schema(max_items: int = 2, max_chars: int = 120) -> dict[str, Any]:
    text = {"type": "string", "maxLength": max_chars}
    required_text = {**text, "minLength": 1}
    task = {
        "type": "object",
        "properties": {"instruction": required_text, "input": text, "output": required_text},
        "required": ["instruction", "input", "output"],
        "additionalProperties": False,
    }
    return {
        "title": "GeneratedTasks",
        "type": "object",
        "properties": {"tasks": {"type": "array", "minItems": 1, "maxItems": max_items, "items": task}},
        "required": ["tasks"],
        "additionalProperties": False,
    }


def assert_follows_tasks_schema(text: str, max_items: int = 2, max_chars: int = 120) -> list[dict[str, str]]:
    """Decode the reply and check it against tasks_schema by hand (no jsonschema dependency).

    strict=False: llama.cpp's grammars let raw control characters (a newline) into strings; whether a model
    writes one depends on the machine's tokens, so the check is about the structure, not about escaping.
    """
    data = json.loads(text, strict=False)
    assert isinstance(data, dict) and set(data) == {"tasks"}, data
    tasks = data["tasks"]
    assert isinstance(tasks, list) and 1 <= len(tasks) <= max_items, tasks
    for task in tasks:
        assert isinstance(task, dict) and set(task) == {"instruction", "input", "output"}, task
        assert all(isinstance(value, str) and len(value) <= max_chars for value in task.values()), task
        assert task["instruction"] and task["output"], task
    return tasks
