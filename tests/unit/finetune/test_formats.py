"""Export formats: the exact shape of each record, and streamed JSON that parses whole whatever the text holds."""

from __future__ import annotations

import json

import pytest

from app.finetune import formats
from app.finetune.formats import ExportRecord
from app.generation.item_formats import parse_item_file

ZH = ExportRecord("翻译成英文：你好", "", "Hello", language="zh", model="qwen", item_id=7)
EN = ExportRecord(
    "Classify the sentiment of this review.",
    "The battery died after a day.",
    "negative",
    language="latin",
    item_id=8,
)
NASTY = ExportRecord(
    'Say "hi" </script><script>alert(1)</script> & leave',
    "line one\nline two\r\n\ttabbed \\ backslash \u2028 separator",
    '{"not": "an object"}\n]\n[',
    item_id=9,
)


def _whole(chunks) -> bytes:  # noqa: ANN001
    return b"".join(chunks)


def test_alpaca_records_have_exactly_instruction_input_output() -> None:
    assert formats.alpaca_record(ZH) == {"instruction": "翻译成英文：你好", "input": "", "output": "Hello"}
    assert formats.alpaca_record(EN) == {
        "instruction": "Classify the sentiment of this review.",
        "input": "The battery died after a day.",
        "output": "negative",
    }


def test_sharegpt_records_put_the_input_after_a_blank_line() -> None:
    assert formats.sharegpt_record(ZH) == {
        "conversations": [{"from": "human", "value": "翻译成英文：你好"}, {"from": "gpt", "value": "Hello"}]
    }
    assert formats.sharegpt_record(EN) == {
        "conversations": [
            {
                "from": "human",
                "value": "Classify the sentiment of this review.\n\nThe battery died after a day.",
            },
            {"from": "gpt", "value": "negative"},
        ]
    }


def test_openai_records_are_a_user_and_an_assistant_message() -> None:
    assert formats.openai_record(ZH) == {
        "messages": [
            {"role": "user", "content": "翻译成英文：你好"},
            {"role": "assistant", "content": "Hello"},
        ]
    }
    assert formats.openai_record(EN)["messages"][0] == {
        "role": "user",
        "content": "Classify the sentiment of this review.\n\nThe battery died after a day.",
    }


def test_table_rows_carry_the_item_and_optionally_its_split() -> None:
    row = formats.table_row(ZH)
    assert row == {
        "item_id": 7,
        "instruction": "翻译成英文：你好",
        "input": "",
        "output": "Hello",
        "language": "zh",
        "model": "qwen",
    }
    assert tuple(row) == formats.TABLE_COLUMNS
    split = ExportRecord("a", split="validation")
    assert formats.table_row(split, with_split=True)["split"] == "validation"


@pytest.mark.parametrize("fmt", formats.TEXT_FORMATS)
def test_every_format_round_trips_chinese_english_and_hostile_text(fmt: str) -> None:
    records = [ZH, EN, NASTY]
    data = _whole(formats.encode(fmt, iter(records)))  # type: ignore[arg-type]
    if fmt == "openai":
        lines = data.decode("utf-8").splitlines()
        assert len(lines) == 3 and data.endswith(b"\n")
        parsed = [json.loads(line) for line in lines]
    else:
        parsed = json.loads(data)
    convert = formats.CONVERTERS[fmt]
    assert parsed == [convert(r) for r in records]
    # Text is data: markup never appears raw, Chinese stays readable UTF-8.
    assert b"</script>" not in data and b"<script>" not in data and b"&" not in data
    assert "翻译成英文：你好".encode() in data
    # And the repository's own importer reads the file back as the same items.
    back = parse_item_file(data, filename=f"x{formats.EXTENSIONS[fmt]}", format=fmt)  # type: ignore[arg-type]
    if fmt == "alpaca":
        expected = [(r.instruction.strip(), r.input.strip(), r.output.strip()) for r in records]
    else:  # the input travels inside the user's turn
        expected = [(formats.prompt_text(r).strip(), "", r.output.strip()) for r in records]
    assert [(i.instruction, i.input, i.output) for i in back] == expected


def test_a_streamed_json_array_parses_whole_in_every_size() -> None:
    assert json.loads(_whole(formats.json_array([]))) == []
    assert json.loads(_whole(formats.json_array([{"a": 1}]))) == [{"a": 1}]
    many = [{"n": i, "text": "文" * (i % 50)} for i in range(2000)]
    chunks = list(
        formats.encode("alpaca", (ExportRecord(str(m["n"]), "", m["text"]) for m in many), chunk_bytes=4096)
    )
    assert len(chunks) > 5 and all(chunks)
    assert [r["instruction"] for r in json.loads(b"".join(chunks))] == [str(i) for i in range(2000)]


def test_encoding_is_lazy_it_reads_records_only_as_chunks_are_taken() -> None:
    read = 0

    def records():  # noqa: ANN202
        nonlocal read
        for i in range(10_000):
            read += 1
            yield ExportRecord(f"instruction {i}", "", "output " * 10)

    stream = formats.encode("openai", records(), chunk_bytes=8192)
    first = next(stream)
    assert first and read < 200
    rest = b"".join(stream)
    assert read == 10_000 and len((first + rest).splitlines()) == 10_000


def test_lone_surrogates_never_break_an_export() -> None:
    odd = ExportRecord("bad \ud800 text", "", "ok")
    data = _whole(formats.encode("openai", [odd]))
    assert json.loads(data)["messages"][0]["content"] == "bad \ud800 text"


def test_the_canonical_line_covers_every_copied_field() -> None:
    base = ExportRecord("i", "in", "out", "zh", "m", 1, "train")
    lines = {formats.canonical_line(base)}
    for change in (
        {"instruction": "j"},
        {"input": "x"},
        {"output": "y"},
        {"language": "ja"},
        {"model": None},
        {"item_id": 2},
        {"split": "validation"},
    ):
        lines.add(formats.canonical_line(ExportRecord(**{**_fields(base), **change})))
    assert len(lines) == 8


def _fields(record: ExportRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in ExportRecord.__slots__}


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("demo", "demo"),
        ("我的数据", "我的数据"),
        ("../../etc/passwd", "etc-passwd"),
        ('a "quoted"\r\nname; x=1', "a-quoted-name-x-1"),
        ("...", "dataset"),
    ],
)
def test_file_stems_are_safe(name: str, stem: str) -> None:
    assert formats.file_stem(name) == stem
    assert formats.file_stem(name, ascii_only=True).isascii()
