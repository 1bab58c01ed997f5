"""Seed file parsing: the real Self-Instruct seeds, the project's own seeds, every accepted format, every rejection."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.datasets.seed_formats import (
    MAX_FIELD_CHARS,
    MAX_NAME_CHARS,
    SeedFormatError,
    SeedInstance,
    SeedTaskIn,
    dump_self_instruct_jsonl,
    parse_seed_file,
)
from app.dedup.tokenize import has_cjk

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SEEDS = REPO_ROOT / "seeds" / "default.jsonl"


def _error(data: bytes | str, **kwargs: object) -> SeedFormatError:
    with pytest.raises(SeedFormatError) as info:
        parse_seed_file(data, **kwargs)  # type: ignore[arg-type]
    return info.value


def _jsonl(*records: object) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


# --- the real Self-Instruct seed file ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_instruct_bytes(shared_data: Path) -> bytes:
    return (shared_data / "self_instruct_seed_tasks.jsonl").read_bytes()


def test_every_self_instruct_seed_parses_with_its_instances_and_label(self_instruct_bytes: bytes) -> None:
    records = [json.loads(line) for line in self_instruct_bytes.decode("utf-8").splitlines() if line.strip()]
    tasks = parse_seed_file(self_instruct_bytes, filename="self_instruct_seed_tasks.jsonl")

    assert len(tasks) == len(records) == 175
    for task, record in zip(tasks, records, strict=True):
        assert task.source_id == record["id"]
        assert task.name == record["name"]
        assert task.instruction == record["instruction"].strip()
        assert task.is_classification is record["is_classification"]
        assert task.instances == tuple(
            SeedInstance(input=i["input"].strip(), output=i["output"].strip()) for i in record["instances"]
        )
    expected_classification = sum(1 for r in records if r["is_classification"] is True)
    assert sum(t.is_classification for t in tasks) == expected_classification
    assert expected_classification == 26


def test_self_instruct_seeds_survive_a_dump_and_parse_round_trip(self_instruct_bytes: bytes) -> None:
    tasks = parse_seed_file(self_instruct_bytes)
    assert parse_seed_file(dump_self_instruct_jsonl(tasks), format="self_instruct") == tasks


# --- the project's own seeds -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_seeds() -> list[SeedTaskIn]:
    return parse_seed_file(DEFAULT_SEEDS.read_bytes(), filename=DEFAULT_SEEDS.name)


def test_default_seeds_meet_the_size_language_and_label_targets(default_seeds: list[SeedTaskIn]) -> None:
    chinese = [t for t in default_seeds if has_cjk(t.instruction)]
    classification = [t for t in default_seeds if t.is_classification]
    with_input = [t for t in default_seeds if any(i.input for i in t.instances)]

    assert len(default_seeds) >= 72
    assert len(chinese) >= 20
    assert len(classification) >= 14
    assert sum(t.is_classification for t in chinese) >= 3
    assert 0.3 <= len(with_input) / len(default_seeds) <= 0.5


def test_default_seeds_are_well_formed_and_distinct(default_seeds: list[SeedTaskIn]) -> None:
    assert len({t.instruction for t in default_seeds}) == len(default_seeds)
    assert len({t.name for t in default_seeds}) == len(default_seeds)
    assert [t.source_id for t in default_seeds] == [
        f"sprout_seed_{n:03d}" for n in range(1, len(default_seeds) + 1)
    ]
    for task in default_seeds:
        assert task.name is not None and re.fullmatch(r"[a-z][a-z0-9_]*", task.name), task.name
        assert 1 <= len(task.instances) <= 2, task.name
        if task.is_classification:
            # A class label, not an essay: short, one line.
            assert all("\n" not in i.output and len(i.output) <= 30 for i in task.instances), task.name


def test_default_seeds_file_is_in_canonical_dump_form(default_seeds: list[SeedTaskIn]) -> None:
    # Keeps the file diff-friendly: regenerating it from parsed tasks changes nothing.
    assert dump_self_instruct_jsonl(default_seeds) == DEFAULT_SEEDS.read_text(encoding="utf-8")


# --- Alpaca JSON and JSONL ---------------------------------------------------------------------------------------


ALPACA_ARRAY = """[
  {
    "instruction": "Give the plural of the noun.",
    "input": "mouse",
    "output": "mice",
    "category": "grammar"
  },
  {"instruction": "  翻译成英文：你好  ", "output": "Hello."}
]
"""


def test_alpaca_json_array_with_optional_input_and_extra_fields() -> None:
    tasks = parse_seed_file(ALPACA_ARRAY.encode("utf-8"), filename="alpaca_data.json")
    assert tasks == [
        SeedTaskIn("Give the plural of the noun.", (SeedInstance("mouse", "mice"),)),
        SeedTaskIn("翻译成英文：你好", (SeedInstance("", "Hello."),)),
    ]


def test_alpaca_json_lines_with_null_input_and_blank_lines() -> None:
    text = (
        '{"instruction": "Name a prime number.", "input": null, "output": "7"}\n'
        "\n"
        '{"instruction": "把句子翻译成中文。", "input": "Good night.", "output": "晚安。", "id": 42}\n'
    )
    tasks = parse_seed_file(text, filename="alpaca.jsonl")
    assert tasks == [
        SeedTaskIn("Name a prime number.", (SeedInstance("", "7"),)),
        SeedTaskIn("把句子翻译成中文。", (SeedInstance("Good night.", "晚安。"),), source_id="42"),
    ]


def test_json_lines_may_mix_self_instruct_and_alpaca_records() -> None:
    text = _jsonl(
        {"instruction": "A", "instances": [{"input": "", "output": "a"}, {"input": "x", "output": "b"}]},
        {"instruction": "B", "input": "y", "output": "c", "is_classification": True},
    )
    tasks = parse_seed_file(text, filename="mixed.json")  # JSONL inside a .json name is accepted too
    assert tasks[0].instances == (SeedInstance("", "a"), SeedInstance("x", "b"))
    assert tasks[1] == SeedTaskIn("B", (SeedInstance("y", "c"),), is_classification=True)


def test_text_is_stripped_at_the_ends_only() -> None:
    text = _jsonl(
        {
            "instruction": "\n  Write a haiku. \t",
            "instances": [{"input": " ", "output": "\nline 1\n\nline 2\n"}],
        }
    )
    [task] = parse_seed_file(text)
    assert task.instruction == "Write a haiku."
    assert task.instances == (SeedInstance("", "line 1\n\nline 2"),)


# --- CSV ---------------------------------------------------------------------------------------------------------


CSV_TEXT = (
    "Name,Instruction,Input,Output,Is_Classification,notes\r\n"
    'poem,"写一首关于春天的短诗。",,"春风吹过田野，\r\n桃花开满山坡。",no,ignored\r\n'
    "\r\n"
    'sentiment,"Classify the sentiment, positive or negative.","I love it, really",Positive,TRUE,\r\n'
    ',"Say ""hi"" politely.",,"Hello, nice to meet you.",,\r\n'
)


def test_csv_with_quoted_multiline_fields_chinese_text_and_flags() -> None:
    tasks = parse_seed_file(CSV_TEXT.encode("utf-8"), filename="seeds.CSV")
    assert tasks == [
        SeedTaskIn(
            "写一首关于春天的短诗。", (SeedInstance("", "春风吹过田野，\r\n桃花开满山坡。"),), name="poem"
        ),
        SeedTaskIn(
            "Classify the sentiment, positive or negative.",
            (SeedInstance("I love it, really", "Positive"),),
            is_classification=True,
            name="sentiment",
        ),
        SeedTaskIn('Say "hi" politely.', (SeedInstance("", "Hello, nice to meet you."),)),
    ]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("true", True), ("1", True), ("Yes", True), ("false", False), ("0", False), ("NO", False), ("", False)],
)
def test_csv_is_classification_spellings(cell: str, expected: bool) -> None:
    [task] = parse_seed_file(f"instruction,output,is_classification\nQ,A,{cell}\n", format="csv")
    assert task.is_classification is expected


def test_csv_without_optional_columns_and_short_rows() -> None:
    [task] = parse_seed_file("output,instruction\nfour,What is 2 + 2?\n")
    assert task == SeedTaskIn("What is 2 + 2?", (SeedInstance("", "four"),))


# --- BOM and detection -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "filename"),
    [
        ('{"instruction": "Q", "output": "A"}\n', "s.jsonl"),
        ('[{"instruction": "Q", "output": "A"}]', "s.json"),
        ("instruction,output\nQ,A\n", "s.csv"),
        ("instruction,output\nQ,A\n", None),
    ],
)
def test_utf8_bom_is_ignored(text: str, filename: str | None) -> None:
    expected = [SeedTaskIn("Q", (SeedInstance("", "A"),))]
    assert parse_seed_file(b"\xef\xbb\xbf" + text.encode("utf-8"), filename=filename) == expected
    assert parse_seed_file("\ufeff" + text, filename=filename) == expected


def test_content_sniffing_without_a_known_extension() -> None:
    one = [SeedTaskIn("Q", (SeedInstance("", "A"),))]
    assert parse_seed_file('  \n[{"instruction": "Q", "output": "A"}]', filename="upload.txt") == one
    assert parse_seed_file('{"instruction": "Q", "output": "A"}') == one
    assert parse_seed_file("instruction,output\nQ,A") == one


def test_extension_wins_over_content() -> None:
    err = _error('{"instruction": "Q", "output": "A"}\n', filename=r"C:\Users\me\seeds.csv")
    assert (err.line, err.field) == (1, "instruction")  # read as CSV: no instruction column


def test_explicit_format_wins_over_extension() -> None:
    one = [SeedTaskIn("Q", (SeedInstance("", "A"),))]
    assert parse_seed_file("instruction,output\nQ,A\n", filename="x.json", format="csv") == one
    assert parse_seed_file('[{"instruction": "Q", "output": "A"}]', filename="x.csv", format="alpaca") == one
    assert (
        parse_seed_file('{"instruction": "Q", "output": "A"}', filename="x.csv", format="self_instruct")
        == one
    )


def test_unknown_format_is_a_programming_error_not_a_file_error() -> None:
    with pytest.raises(ValueError) as info:
        parse_seed_file("x", format="xml")  # type: ignore[arg-type]
    assert not isinstance(info.value, SeedFormatError)


# --- rejections: each names the first bad line and its field -----------------------------------------------------


GOOD = {"instruction": "Q", "instances": [{"input": "", "output": "A"}], "is_classification": False}


def test_bad_json_on_line_3() -> None:
    text = _jsonl(GOOD, GOOD) + '{"instruction": "Q", "output": "A",}\n' + "not json either\n"
    err = _error(text, filename="s.jsonl")
    assert (err.line, err.field) == (3, None)
    assert str(err).startswith("line 3: invalid JSON")


def test_missing_instruction() -> None:
    err = _error(_jsonl(GOOD, {"instances": GOOD["instances"]}))
    assert (err.line, err.field) == (2, "instruction")
    assert str(err) == "line 2: field 'instruction': is missing"


@pytest.mark.parametrize("value", ["", "   \n\t"])
def test_empty_instruction(value: str) -> None:
    err = _error(_jsonl({**GOOD, "instruction": value}))
    assert (err.line, err.field) == (1, "instruction")
    assert str(err) == "line 1: field 'instruction': must be a non-empty string"


def test_instruction_of_the_wrong_type() -> None:
    err = _error(_jsonl({**GOOD, "instruction": ["Q"]}))
    assert (err.line, err.field) == (1, "instruction")
    assert "got array" in str(err)


@pytest.mark.parametrize("value", [{"input": "", "output": "A"}, "A", None])
def test_instances_not_a_list(value: object) -> None:
    err = _error("\n" + _jsonl({**GOOD, "instances": value}))
    assert (err.line, err.field) == (2, "instances")  # the blank first line still counts


def test_instances_empty_list() -> None:
    err = _error(_jsonl({**GOOD, "instances": []}))
    assert (err.line, err.field) == (1, "instances")


def test_instance_without_output() -> None:
    instances = [{"input": "", "output": "A"}, {"input": "x"}]
    err = _error(_jsonl(GOOD, GOOD, GOOD, {**GOOD, "instances": instances}))
    assert (err.line, err.field) == (4, "instances[1].output")
    assert str(err) == "line 4: field 'instances[1].output': is missing"


def test_instance_that_is_not_an_object_and_empty_output() -> None:
    assert _error(_jsonl({**GOOD, "instances": ["A"]})).field == "instances[0]"
    err = _error(_jsonl({**GOOD, "instances": [{"input": "x", "output": "  "}]}))
    assert (err.line, err.field) == (1, "instances[0].output")
    err = _error(_jsonl({**GOOD, "instances": [{"input": 3, "output": "A"}]}))
    assert (err.line, err.field) == (1, "instances[0].input")


def test_alpaca_record_without_output() -> None:
    err = _error('[{"instruction": "Q", "output": "A"}, {"instruction": "Q", "input": "x"}]')
    assert (err.line, err.record, err.field) == (1, 2, "output")


def test_json_is_classification_must_be_a_boolean() -> None:
    err = _error(_jsonl(GOOD, {**GOOD, "is_classification": "yes"}))
    assert (err.line, err.field) == (2, "is_classification")


def test_csv_is_classification_maybe() -> None:
    text = 'instruction,output,is_classification\nQ,"two\nlines",yes\n"Q2",A,maybe\n'
    err = _error(text.encode("utf-8"), filename="s.csv")
    assert (err.line, err.field) == (4, "is_classification")  # the quoted newline pushes the row to line 4
    assert str(err) == "line 4: field 'is_classification': must be true/false, 1/0 or yes/no, got 'maybe'"


def test_csv_without_an_instruction_column() -> None:
    err = _error("prompt,output\nQ,A\n", filename="s.csv")
    assert (err.line, err.field) == (1, "instruction")
    assert "'prompt', 'output'" in str(err)


def test_csv_without_an_output_column() -> None:
    err = _error("instruction,input\nQ,\n", filename="s.csv")
    assert (err.line, err.field) == (1, "output")


def test_csv_empty_instruction_cell_and_extra_cells() -> None:
    err = _error("instruction,output\nQ,A\n  ,A\n", format="csv")
    assert (err.line, err.field) == (3, "instruction")
    err = _error("instruction,output\nQ,A,unquoted, comma\n", format="csv")
    assert (err.line, err.field) == (2, None)
    assert parse_seed_file("instruction,output\nQ,A,,\n", format="csv")[0].instances[0].output == "A"


def test_csv_unterminated_quote() -> None:
    err = _error('instruction,output\nQ,A\n"Q2,A2\n', format="csv")
    assert err.line == 3 and "malformed CSV" in str(err)


def test_csv_duplicate_column() -> None:
    err = _error("instruction,output,Instruction\nQ,A,B\n", format="csv")
    assert (err.line, err.field) == (1, "instruction")


def test_json_array_element_not_an_object() -> None:
    text = '[\n  {"instruction": "Q", "output": "A"},\n  "just a string",\n  {"instruction": "Q", "output": "A"}\n]'
    err = _error(text, filename="alpaca.json")
    assert (err.line, err.record, err.field) == (3, 2, None)
    assert str(err) == "line 3 (record 2): expected a JSON object, got string"


def test_json_array_reports_the_line_of_a_bad_field_in_a_pretty_printed_file() -> None:
    records = [{"instruction": "Q", "input": "", "output": "A"}] * 3 + [{"instruction": "", "output": "A"}]
    err = _error(json.dumps(records, indent=2), filename="alpaca.json")
    assert (err.line, err.record, err.field) == (17, 4, "instruction")  # the line where the element opens


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[{"instruction": "Q", "output": "A"}\n{"instruction": "Q", "output": "A"}]', 2),
        ('[{"instruction": "Q", "output": "A"},\n]', 2),
        ('[{"instruction": "Q", "output": "A"}]\n[]', 2),
        ('[{"instruction": "Q", "output": "A"}', 1),
    ],
)
def test_json_array_syntax_errors(text: str, line: int) -> None:
    err = _error(text)
    assert (err.line, err.field) == (line, None)
    assert "invalid JSON" in str(err)


def test_first_bad_record_is_reported_even_before_a_later_syntax_error() -> None:
    err = _error('[{"instruction": "Q", "output": ""},\n{broken')
    assert (err.line, err.record, err.field) == (1, 1, "output")
    err = _error(_jsonl(GOOD, {**GOOD, "instruction": ""}) + "{broken\n")
    assert (err.line, err.field) == (2, "instruction")


def test_invalid_utf8_names_line_and_byte_offset() -> None:
    data = b'{"instruction": "Q", "output": "A"}\n{"instruction": "caf\xe9", "output": "A"}\n'
    err = _error(data, filename="s.jsonl")
    assert (err.line, err.field) == (2, None)
    assert f"byte offset {data.index(0xE9)}" in str(err)


@pytest.mark.parametrize(
    "data", [b"", "", b"\xef\xbb\xbf", b"  \n\r\n\t", "[]", " [ ] ", "instruction,output\n"]
)
def test_empty_file(data: bytes | str) -> None:
    err = _error(data)
    assert (err.line, err.field) == (None, None)
    assert "no seed tasks found" in str(err)


# --- limits ------------------------------------------------------------------------------------------------------


def test_field_length_limit() -> None:
    at_limit = "x" * MAX_FIELD_CHARS
    [task] = parse_seed_file(_jsonl({**GOOD, "instances": [{"input": at_limit, "output": "A"}]}))
    assert len(task.instances[0].input) == MAX_FIELD_CHARS

    err = _error(_jsonl({**GOOD, "instances": [{"input": at_limit + "x", "output": "A"}]}))
    assert (err.line, err.field) == (1, "instances[0].input")
    assert "20,001 characters" in str(err) and "20,000" in str(err)
    err = _error(f"instruction,output\nQ,{'y' * (MAX_FIELD_CHARS + 1)}\n", format="csv")
    assert (err.line, err.field) == (2, "output")


@pytest.mark.parametrize("bad", ["\\u0000", "\\ud800"])
def test_unstorable_characters_are_rejected(bad: str) -> None:
    err = _error('{"instruction": "Q' + bad + '", "output": "A"}')
    assert (err.line, err.field) == (1, "instruction")


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    assert _error("[" * 100_000).line == 1
    assert _error("{" + '"a":[' * 100_000).line == 1


def test_name_and_id_validation() -> None:
    [task] = parse_seed_file(_jsonl({**GOOD, "name": " ", "id": None}))
    assert (task.name, task.source_id) == (None, None)
    assert _error(_jsonl({**GOOD, "name": 3})).field == "name"
    assert _error(_jsonl({**GOOD, "id": True})).field == "id"
    [task] = parse_seed_file(_jsonl({**GOOD, "name": "n" * MAX_NAME_CHARS, "id": 7}))
    assert (len(task.name or ""), task.source_id) == (MAX_NAME_CHARS, "7")
    assert _error(_jsonl({**GOOD, "name": "n" * (MAX_NAME_CHARS + 1)})).field == "name"
    assert _error(f"instruction,output,id\nQ,A,{'i' * (MAX_NAME_CHARS + 1)}\n").field == "id"


def test_error_is_a_value_error_with_a_bare_reason() -> None:
    err = _error(_jsonl({**GOOD, "instruction": ""}))
    assert isinstance(err, ValueError)
    assert err.reason == "must be a non-empty string"


# --- dump --------------------------------------------------------------------------------------------------------


def test_dump_round_trips_and_omits_unset_ids_and_names() -> None:
    tasks = [
        SeedTaskIn("翻译成英文：你好", (SeedInstance("", "Hello."),)),
        SeedTaskIn(
            "Classify.",
            (SeedInstance("a\nb", "yes"), SeedInstance("c", "no")),
            is_classification=True,
            name="cls",
            source_id="s1",
        ),
    ]
    text = dump_self_instruct_jsonl(tasks)
    first, second = (json.loads(line) for line in text.splitlines())
    assert "翻译成英文" in text  # readable, not \\u-escaped
    assert first == {
        "instruction": "翻译成英文：你好",
        "instances": [{"input": "", "output": "Hello."}],
        "is_classification": False,
    }
    assert second["id"] == "s1" and second["name"] == "cls"
    assert parse_seed_file(text) == tasks


def test_dump_keeps_each_record_on_one_line_for_any_line_splitter() -> None:
    tasks = [SeedTaskIn("Q\u2028R", (SeedInstance("\x85", "A\u2029B"),))]
    text = dump_self_instruct_jsonl(tasks)
    assert len(text.splitlines()) == 1
    assert parse_seed_file(text) == [SeedTaskIn("Q\u2028R", (SeedInstance("", "A\u2029B"),))]
