"""The README.md of a Hugging Face export: YAML front matter (configs and splits, so `load_dataset(dir)` finds
the parquet files) and a page of counts, languages, models, thresholds and review statistics. Pure: no I/O.

The card holds counts and names only, never item text. Names are user text (a dataset's name, a model's):
in the YAML they are JSON-quoted strings (JSON strings are YAML double-quoted scalars), and in the markdown every
ASCII punctuation character is backslash-escaped and line breaks become spaces, so a name shows as the
characters it is and can never open a heading, a link, a table cell, raw HTML or a code block.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Item languages (app/reports/language.py) that are ISO 639-1 codes; "latin", "mixed" and "other" are not.
ISO_LANGUAGES = {"zh": "zh", "ja": "ja", "ko": "ko"}
_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
_BREAKS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
MAX_NAME = 300


@dataclass(frozen=True, slots=True)
class CardInfo:
    dataset: str  # the dataset's name (user text)
    splits: Mapping[str, int]  # split -> rows, in the order the files hold them
    languages: Mapping[str, int] = field(default_factory=dict)
    models: Mapping[str | None, int] = field(default_factory=dict)
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    review: Mapping[str, Any] = field(default_factory=dict)
    snapshot: Mapping[str, Any] | None = None  # id, content_hash, seed, validation_fraction, created_at
    data_dir: str = "data"  # where the parquet files are, relative to the card


def markdown_text(text: str) -> str:
    """User text as literal markdown: one line, every ASCII punctuation character escaped."""
    flat = _BREAKS.sub(" ", text).strip()
    if len(flat) > MAX_NAME:
        flat = flat[:MAX_NAME] + "…"
    return _PUNCTUATION.sub(r"\\\1", flat)


def yaml_string(text: str) -> str:
    """A YAML double-quoted scalar holding exactly `text` (JSON's escapes are YAML's)."""
    return json.dumps(text, ensure_ascii=True)


def size_category(n: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return label
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def parquet_name(split: str) -> str:
    return f"{split}-00000-of-00001.parquet"


def _front_matter(info: CardInfo) -> list[str]:
    total = sum(info.splits.values())
    lines = ["---", f"pretty_name: {yaml_string(info.dataset)}"]
    codes = sorted(
        {ISO_LANGUAGES[lang] for lang in info.languages if lang in ISO_LANGUAGES and info.languages[lang]}
    )
    if codes:
        lines.append("language:")
        lines.extend(f"- {code}" for code in codes)
    lines += [
        "task_categories:",
        "- text-generation",
        "size_categories:",
        f"- {size_category(total)}",
        "tags:",
        "- instruction-tuning",
        "- sprout",
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for split in info.splits:
        lines += [f"  - split: {split}", f"    path: {info.data_dir}/{split}-*.parquet"]
    lines += ["dataset_info:", "  features:"]
    for name, dtype in (
        ("item_id", "int64"),
        ("instruction", "string"),
        ("input", "string"),
        ("output", "string"),
        ("language", "string"),
        ("model", "string"),
    ):
        lines += [f"  - name: {name}", f"    dtype: {dtype}"]
    lines.append("  splits:")
    for split, rows in info.splits.items():
        lines += [f"  - name: {split}", f"    num_examples: {int(rows)}"]
    lines.append("---")
    return lines


def _table(header: tuple[str, str], rows: list[tuple[str, int]]) -> list[str]:
    out = [f"| {header[0]} | {header[1]} |", "| --- | ---: |"]
    out.extend(f"| {markdown_text(name)} | {int(n)} |" for name, n in rows)
    return out


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "none" if value is None else str(value).lower()
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return markdown_text(str(value))


def render_card(info: CardInfo) -> str:
    total = sum(info.splits.values())
    name = markdown_text(info.dataset)
    lines = _front_matter(info)
    lines += [
        "",
        f"# {name}",
        "",
        f"Instruction-tuning data exported by Sprout from the dataset {name}: {total} approved items, each an "
        "instruction, an optional input and an output (columns `instruction`, `input`, `output`, with the "
        "item's `language`, the `model` that wrote it and its Sprout `item_id`).",
        "",
    ]
    if info.snapshot is not None:
        snap = info.snapshot
        lines += [
            "## Snapshot",
            "",
            f"- snapshot: {_number(snap.get('id'))}",
            f"- content hash (sha256): `{_hex(snap.get('content_hash'))}`",
            f"- split seed: {_number(snap.get('seed'))}, validation fraction: "
            f"{_number(snap.get('validation_fraction'))}",
        ]
        if snap.get("created_at") is not None:
            lines.append(f"- created at: {markdown_text(str(snap['created_at']))}")
        lines.append("")
    lines += ["## Splits", "", *_table(("split", "items"), [(s, n) for s, n in info.splits.items()]), ""]
    languages = sorted(info.languages.items(), key=lambda kv: (-kv[1], kv[0]))
    lines += ["## Languages", "", *_table(("language", "items"), languages), ""]
    models = sorted(((m or "unknown", n) for m, n in info.models.items()), key=lambda kv: (-kv[1], kv[0]))
    lines += ["## Models", "", *_table(("model", "items"), models), ""]
    if info.thresholds:
        lines += ["## Filters", ""]
        lines += [
            f"- {markdown_text(k)}: {_number(v)}"
            for k, v in info.thresholds.items()
            if not isinstance(v, dict)
        ]
        lines.append("")
    if info.review:
        lines += ["## Review", ""]
        labels = {
            "approved": "approvals",
            "rejected": "rejections",
            "edited": "edits (approved with changes)",
            "reviewers": "reviewers",
            "events": "review events",
        }
        for key, label in labels.items():
            if key in info.review:
                lines.append(f"- {label}: {_number(info.review[key])}")
        lines.append("")
    lines += [
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset, load_from_disk",
        "",
        'ds = load_from_disk("path/to/this/directory")  # the Arrow copy',
        'ds = load_dataset("path/to/this/directory")  # the parquet files',
        "```",
        "",
    ]
    return "\n".join(lines)


def _hex(value: Any) -> str:
    text = str(value or "")
    return text if re.fullmatch(r"[0-9a-f]{0,128}", text) else ""
