"""The dataset card of a Hugging Face export: counts, languages, models, thresholds and review statistics; front
matter that names the splits; and names that stay names, whatever characters a user put in them."""

from __future__ import annotations

import json
import re

import pytest

from app.finetune.dataset_card import CardInfo, markdown_text, render_card, size_category, yaml_string

INFO = CardInfo(
    dataset="demo",
    splits={"train": 90, "validation": 10},
    languages={"zh": 60, "latin": 40},
    models={"qwen2.5-7b": 70, None: 30},
    thresholds={"rouge_threshold": 0.7, "fuzzy_cutoff": None, "by_job": {"3": {"rouge_threshold": 0.6}}},
    review={
        "approved": 100,
        "rejected": 12,
        "edited": 9,
        "reviewers": 3,
        "events": 130,
        "last_event_id": 130,
    },
    snapshot={
        "id": 4,
        "content_hash": "ab" * 32,
        "seed": 42,
        "validation_fraction": 0.1,
        "created_at": "2025-01-02",
    },
)


def _front_matter(card: str) -> list[str]:
    assert card.startswith("---\n")
    return card.split("\n---\n", 1)[0].splitlines()[1:]


def test_the_card_reports_counts_languages_models_thresholds_and_review() -> None:
    card = render_card(INFO)
    body = card.split("\n---\n", 1)[1]
    assert "# demo" in body and "100 approved items" in body
    assert "| train | 90 |" in body and "| validation | 10 |" in body
    assert "| zh | 60 |" in body and "| latin | 40 |" in body
    assert "| qwen2\\.5\\-7b | 70 |" in body and "| unknown | 30 |" in body
    assert "rouge\\_threshold: 0.7" in body and "fuzzy\\_cutoff: none" in body
    for line in ("approvals: 100", "rejections: 12", "edits (approved with changes): 9", "reviewers: 3"):
        assert f"- {line}" in body
    assert "review events: 130" in body
    assert "abab" in body and "split seed: 42" in body


def test_the_front_matter_names_the_splits_files_and_languages() -> None:
    lines = _front_matter(render_card(INFO))
    text = "\n".join(lines)
    assert 'pretty_name: "demo"' in lines
    assert "language:\n- zh" in text and "latin" not in text  # only real language codes
    assert "  - split: train\n    path: data/train-*.parquet" in text
    assert "  - split: validation\n    path: data/validation-*.parquet" in text
    assert "  - name: train\n    num_examples: 90" in text
    assert "- n<1K" in text


@pytest.mark.parametrize(
    "name",
    [
        "# Heading\n\n## injected",
        "[click](https://evil.example) ![x](javascript:alert(1))",
        "<script>alert(1)</script><img src=x onerror=alert(1)>",
        "a | b | c\n| --- |",
        "```\ncode\n```",
        '---\nlicense: "evil"\n---',
        "name: value\nother: 1",
        "*emph* _u_ `tick` \\ ~~x~~ &amp;",
    ],
)
def test_user_names_cannot_inject_markdown_html_or_yaml(name: str) -> None:
    info = CardInfo(dataset=name, splits={"train": 1}, models={name: 1}, languages={"other": 1})
    card = render_card(info)
    front = _front_matter(card)
    # The YAML holds the name as one double-quoted scalar that decodes back to it.
    pretty = [line for line in front if line.startswith("pretty_name: ")]
    assert len(pretty) == 1 and json.loads(pretty[0].removeprefix("pretty_name: ")) == name
    assert not any(line.startswith(("license", "name:", "other:")) for line in front)
    # The card has exactly its own structure: headings, the front matter fences, one code block.
    assert card.count("\n---\n") == 1
    headings = [line for line in card.split("\n---\n", 1)[1].splitlines() if line.startswith("#")]
    assert headings[0].startswith("# ") and all(h.startswith(("# ", "## ")) for h in headings)
    assert [h for h in headings if h.startswith("## ")] == [
        "## Splits",
        "## Languages",
        "## Models",
        "## Loading",
    ]
    body = card.split("\n---\n", 1)[1]
    assert body.count("```") == 2
    # No raw markup: every ASCII punctuation character of the name is escaped wherever it is shown.
    shown = markdown_text(name)
    assert re.search(r"(?<!\\)[<>\[\]`|*_#&!]", shown) is None
    assert "\n" not in shown
    assert f"# {shown}" in card and f"| {shown} | 1 |" in card


def test_markdown_text_keeps_the_characters_readable() -> None:
    assert markdown_text("我的数据集 v2") == "我的数据集 v2"
    assert markdown_text("a_b") == "a\\_b"
    assert markdown_text("x" * 1000).endswith("…")


def test_yaml_strings_escape_everything_yaml_could_read_as_structure() -> None:
    assert yaml_string('a"b\nc: d') == '"a\\"b\\nc: d"'
    assert yaml_string("中文") == '"\\u4e2d\\u6587"'


def test_size_categories() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 50_000, 100_000, 2_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "100K<n<1M",
        "1M<n<10M",
    ]


def test_a_live_export_has_no_snapshot_section_and_a_single_split() -> None:
    card = render_card(CardInfo(dataset="d", splits={"train": 5}, languages={"ja": 5}, models={"m": 5}))
    assert "## Snapshot" not in card and "validation" not in card
    assert "- ja" in card and "| ja | 5 |" in card
