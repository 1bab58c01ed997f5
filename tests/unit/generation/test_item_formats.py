"""Instruction-data file parsing: Alpaca, ShareGPT and OpenAI chat records, detection, and every rejection."""

from __future__ import annotations

import dataclasses
import json

import pytest

from app.datasets.seed_formats import SeedFormatError
from app.generation import item_formats
from app.generation.item_formats import (
    MAX_FIELD_CHARS,
    ItemFormatError,
    ItemIn,
    parse_item_file,
)


def _error(data: bytes | str, **kwargs: object) -> ItemFormatError:
    with pytest.raises(ItemFormatError) as info:
        parse_item_file(data, **kwargs)  # type: ignore[arg-type]
    return info.value


def _jsonl(*records: object) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _where(err: ItemFormatError) -> tuple[int | None, int | None, str | None]:
    return err.line, err.record, err.field


def _sharegpt(human: str = "Q", gpt: str = "A", *, system: str | None = None) -> dict[str, object]:
    turns = [{"from": "system", "value": system}] if system is not None else []
    return {"conversations": [*turns, {"from": "human", "value": human}, {"from": "gpt", "value": gpt}]}


def _openai(user: object = "Q", assistant: object = "A", *, system: str | None = None) -> dict[str, object]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    return {
        "messages": [
            *messages,
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
    }


ALPACA = {"instruction": "Q", "output": "A"}
SHAREGPT = _sharegpt()
OPENAI = _openai()


# --- Alpaca ------------------------------------------------------------------------------------------------------


ALPACA_ARRAY = """[
  {
    "instruction": "Give the plural of the noun.",
    "input": "mouse",
    "output": "mice",
    "category": "grammar"
  },
  {"instruction": "  Name a prime number. ", "input": null, "output": "7"}
]
"""


def test_alpaca_json_array_with_optional_input_and_extra_fields() -> None:
    items = parse_item_file(ALPACA_ARRAY.encode("utf-8"), filename="alpaca_data.json")
    assert items == [
        ItemIn("Give the plural of the noun.", "mouse", "mice", line=2),
        ItemIn("Name a prime number.", "", "7", line=8),
    ]


def test_alpaca_json_lines_count_blank_lines() -> None:
    text = (
        "\n"
        '{"instruction": "Name a prime number.", "output": "7"}\n'
        "   \n"
        "\n"
        '{"instruction": "Reverse the word.", "input": "abc", "output": "cba", "id": 9}\n'
    )
    assert parse_item_file(text, filename="alpaca.jsonl") == [
        ItemIn("Name a prime number.", "", "7", line=2),
        ItemIn("Reverse the word.", "abc", "cba", line=5),
    ]


def test_text_is_stripped_at_the_ends_only() -> None:
    [item] = parse_item_file(
        _jsonl({"instruction": "\n  Write a haiku. \t", "input": " ", "output": "\nl1\n\nl2\n"})
    )
    assert item == ItemIn("Write a haiku.", "", "l1\n\nl2", line=1)


# --- ShareGPT ----------------------------------------------------------------------------------------------------


def test_sharegpt_json_lines_with_both_spellings_of_the_speakers() -> None:
    text = _jsonl(
        _sharegpt("What is 2 + 2?", "4"),
        {"conversations": [{"from": "user", "value": "Say hi."}, {"from": "assistant", "value": "Hi!"}]},
    )
    assert parse_item_file(text, filename="chats.jsonl") == [
        ItemIn("What is 2 + 2?", "", "4", line=1),
        ItemIn("Say hi.", "", "Hi!", line=2),
    ]


def test_sharegpt_json_array() -> None:
    text = json.dumps([_sharegpt("Q1", "A1"), _sharegpt("Q2", "A2")], indent=2)
    items = parse_item_file(text, filename="sharegpt.json")
    assert [(i.instruction, i.output) for i in items] == [("Q1", "A1"), ("Q2", "A2")]
    assert items[0].line == 2
    assert items[1].line == text.splitlines().index("  {", 2) + 1


def test_sharegpt_system_turns_are_ignored() -> None:
    record = _sharegpt("Translate: chat", "cat", system="You are a French teacher.")
    record["conversations"].insert(0, {"from": "system", "value": ""})  # type: ignore[attr-defined]
    [item] = parse_item_file(_jsonl(record))
    assert item == ItemIn("Translate: chat", "", "cat", line=1)


def test_sharegpt_takes_the_first_exchange_and_ignores_later_turns() -> None:
    record = {
        "id": "x1",
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello! How can I help?"},
            {"from": "human", "value": "Tell me a joke."},
            {"from": "gpt", "value": "..."},
            {"from": "bing", "value": None},  # not even validated
            "garbage",
        ],
    }
    [item] = parse_item_file(_jsonl(record))
    assert (item.instruction, item.output) == ("Hi", "Hello! How can I help?")


# --- OpenAI chat -------------------------------------------------------------------------------------------------


def test_openai_json_lines_with_a_system_message() -> None:
    text = _jsonl(
        _openai("Is the sky blue?", "Yes.", system="Answer briefly."),
        {**_openai("Name a color.", "Red."), "tools": []},
    )
    assert parse_item_file(text.encode("utf-8"), filename="train.jsonl") == [
        ItemIn("Is the sky blue?", "", "Yes.", line=1),
        ItemIn("Name a color.", "", "Red.", line=2),
    ]


def test_openai_json_array_takes_the_first_exchange() -> None:
    record = _openai("Q1", "A1")
    record["messages"] += [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]  # type: ignore[operator]
    items = parse_item_file(json.dumps([record, _openai("Q3", "A3")]))
    assert items == [ItemIn("Q1", "", "A1", line=1), ItemIn("Q3", "", "A3", line=1)]


def test_openai_text_content_parts_are_joined_with_a_newline() -> None:
    user = [{"type": "text", "text": " Summarise:"}, {"type": "text", "text": "The cat sat. "}]
    assistant = [{"type": "text", "text": "A cat sat.", "cache_control": {"type": "ephemeral"}}]
    [item] = parse_item_file(_jsonl(_openai(user, assistant)))
    assert (item.instruction, item.output) == ("Summarise:\nThe cat sat.", "A cat sat.")


@pytest.mark.parametrize(
    ("content", "field", "reason"),
    [
        (
            [{"type": "text", "text": "Describe:"}, {"type": "image_url", "image_url": {"url": "x"}}],
            "messages[0].content[1].type",
            "must be 'text', got 'image_url'",
        ),
        ([{"type": 3, "text": "Q"}], "messages[0].content[0].type", "must be 'text', got number"),
        ([{"text": "Q"}], "messages[0].content[0].type", "is missing"),
        (["Q"], "messages[0].content[0]", "must be a content part"),
        ([{"type": "text"}], "messages[0].content[0].text", "is missing"),
        ([{"type": "text", "text": None}], "messages[0].content[0].text", "must be a string, got null"),
        ([], "messages[0].content", "must be a non-empty string"),
        ([{"type": "text", "text": "  "}], "messages[0].content", "must be a non-empty string"),
        (None, "messages[0].content", "got null"),
        ({"type": "text", "text": "Q"}, "messages[0].content", "got object"),
    ],
)
def test_openai_content_rejections(content: object, field: str, reason: str) -> None:
    err = _error(_jsonl(OPENAI, _openai(content)))
    assert _where(err) == (2, None, field)
    assert reason in err.reason


# --- Chinese text ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        {"instruction": "翻译成英文：你好", "output": "Hello"},
        _sharegpt("翻译成英文：你好", "Hello"),
        _openai("翻译成英文：你好", "Hello"),
        _openai([{"type": "text", "text": "翻译成英文：你好"}], "Hello"),
    ],
)
@pytest.mark.parametrize("container", ["jsonl", "json"])
def test_chinese_text_round_trips_exactly(record: dict[str, object], container: str) -> None:
    text = _jsonl(record) if container == "jsonl" else json.dumps([record], ensure_ascii=False, indent=1)
    for data in (text.encode("utf-8"), text, json.dumps([record]) if container == "json" else _jsonl(record)):
        [item] = parse_item_file(data, filename=f"zh.{container}")
        assert (item.instruction, item.input, item.output) == ("翻译成英文：你好", "", "Hello")


def test_unicode_line_separators_inside_strings_do_not_split_a_record() -> None:
    text = json.dumps({"instruction": "a\u2028b\x85c", "output": "d\u2029e"}, ensure_ascii=False) + "\n"
    [item] = parse_item_file(text, filename="u.jsonl")
    assert item == ItemIn("a\u2028b\x85c", "", "d\u2029e", line=1)


# --- container and shape detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (ALPACA, ItemIn("Q", "", "A", line=1)),
        ({**ALPACA, "input": "I"}, ItemIn("Q", "I", "A", line=1)),
        (SHAREGPT, ItemIn("Q", "", "A", line=1)),
        (OPENAI, ItemIn("Q", "", "A", line=1)),
    ],
)
@pytest.mark.parametrize(
    "filename", [None, "data.txt", "data.jsonl", "DATA.NDJSON", r"C:\Users\me\data.JSONL"]
)
def test_auto_detects_the_shape_of_json_lines(record: dict, expected: ItemIn, filename: str | None) -> None:
    assert parse_item_file(_jsonl(record, record), filename=filename) == [
        expected,
        dataclasses.replace(expected, line=2),
    ]


@pytest.mark.parametrize("record", [ALPACA, SHAREGPT, OPENAI])
@pytest.mark.parametrize("filename", [None, "data", "data.json", "/tmp/x.y/Data.Json"])
def test_auto_detects_the_shape_of_json_arrays(record: dict, filename: str | None) -> None:
    text = " \n[" + json.dumps(record) + ",\n" + json.dumps(record) + "]"
    assert parse_item_file(text, filename=filename) == [
        ItemIn("Q", "", "A", line=2),
        ItemIn("Q", "", "A", line=3),
    ]


def test_shape_priority_when_a_record_has_several_keys() -> None:
    record = {**ALPACA, **_openai("from messages", "M"), **_sharegpt("from conversations", "C")}
    assert parse_item_file(_jsonl(record))[0].instruction == "from conversations"
    del record["conversations"]
    assert parse_item_file(_jsonl(record))[0].instruction == "from messages"


@pytest.mark.parametrize(
    ("format", "expected"), [("alpaca", "Q"), ("openai", "from messages"), ("sharegpt", "from conversations")]
)
def test_explicit_format_skips_detection(format: str, expected: str) -> None:
    record = {**ALPACA, **_openai("from messages", "M"), **_sharegpt("from conversations", "C")}
    assert parse_item_file(_jsonl(record), format=format)[0].instruction == expected  # type: ignore[arg-type]


def test_explicit_format_rejects_a_record_of_another_shape() -> None:
    err = _error(_jsonl(OPENAI), format="sharegpt")
    assert _where(err) == (1, None, "conversations")
    assert str(err).startswith(
        "line 1: field 'conversations': is missing (this record is in OpenAI chat format"
    )
    err = _error(_jsonl({"prompt": "Q"}), format="alpaca")
    assert str(err) == "line 1: field 'instruction': is missing"


def test_extension_picks_the_container() -> None:
    # A .json file that does not start with "[" holds one record per line.
    assert parse_item_file("\n  " + _jsonl(ALPACA), filename="data.json") == [ItemIn("Q", "", "A", line=2)]
    # A .jsonl file is read line by line even when it holds an array.
    err = _error(json.dumps([ALPACA]), filename="data.jsonl")
    assert _where(err) == (1, None, None)
    assert err.reason == "expected a JSON object, got array"
    err = _error(json.dumps([ALPACA], indent=2), filename="data.ndjson")
    assert _where(err) == (1, None, None)
    assert err.reason.startswith("invalid JSON")


@pytest.mark.parametrize("record", [ALPACA, SHAREGPT, OPENAI])
def test_json_lines_in_a_json_file_as_hugging_face_writes_them(record: dict) -> None:
    # Dataset.to_json writes one compact record per line, ASCII-escaped, under the .json name the user gave.
    lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in [record, {**record}])
    assert parse_item_file(lines.encode("utf-8"), filename="train.json") == [
        ItemIn("Q", "", "A", line=1),
        ItemIn("Q", "", "A", line=2),
    ]
    # Read and located as JSON Lines: an array on a later line is a bad record, named by its line alone.
    err = _error(lines + "\n" + json.dumps([record]), filename="train.json")
    assert _where(err) == (4, None, None)
    assert err.reason == "expected a JSON object, got array"


def test_sniffing_reads_anything_but_an_array_as_json_lines() -> None:
    err = _error("instruction,output\nQ,A\n", filename="data.csv")
    assert _where(err) == (1, None, None)
    assert err.reason.startswith("invalid JSON")


@pytest.mark.parametrize(
    ("record", "found"),
    [
        ({"prompt": "Q", "response": "A"}, "(found 'prompt', 'response')"),
        ({}, "(found none)"),
        ({f"k{i}": i for i in range(12)}, "'k9', ...)"),
    ],
)
def test_unknown_first_record_shape_names_line_1(record: dict, found: str) -> None:
    err = _error(_jsonl(record, ALPACA))
    assert _where(err) == (1, None, None)
    assert err.reason.startswith("unknown record format: expected an 'instruction' (Alpaca), 'conversations'")
    assert err.reason.endswith(found)
    err = _error(json.dumps([record, ALPACA]))
    assert _where(err) == (1, 1, None)


@pytest.mark.parametrize("value", ["text", 3, None, [ALPACA], True])
def test_a_record_that_is_not_an_object(value: object) -> None:
    err = _error(_jsonl(ALPACA, value))
    assert _where(err) == (2, None, None)
    assert err.reason.startswith("expected a JSON object, got ")
    assert _where(_error(_jsonl(value), filename="data.jsonl")) == (1, None, None)


@pytest.mark.parametrize(
    ("first", "other", "field", "other_name"),
    [
        (ALPACA, SHAREGPT, "instruction", "ShareGPT"),
        (ALPACA, OPENAI, "instruction", "OpenAI chat"),
        (SHAREGPT, ALPACA, "conversations", "Alpaca"),
        (OPENAI, SHAREGPT, "messages", "ShareGPT"),
    ],
)
def test_mixed_shapes_are_refused_at_the_first_record_of_another_shape(
    first: dict, other: dict, field: str, other_name: str
) -> None:
    err = _error(_jsonl(first, first, other, other))
    assert _where(err) == (3, None, field)
    assert f"this record is in {other_name} format" in err.reason
    assert "all records must have one format" in err.reason
    err = _error(json.dumps([first, other]))
    assert _where(err) == (1, 2, field)


def test_a_later_record_without_any_known_key_is_missing_the_files_key() -> None:
    err = _error(_jsonl(SHAREGPT, {"prompt": "Q"}))
    assert str(err) == "line 2: field 'conversations': is missing"


def test_unknown_format_is_a_programming_error_not_a_file_error() -> None:
    with pytest.raises(ValueError) as info:
        parse_item_file(_jsonl(ALPACA), format="dolly")  # type: ignore[arg-type]
    assert not isinstance(info.value, ItemFormatError)


# --- Alpaca rejections -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        ({"instruction": "", "output": "A"}, "instruction", "must be a non-empty string"),
        ({"instruction": " \n\t", "output": "A"}, "instruction", "must be a non-empty string"),
        ({"instruction": ["Q"], "output": "A"}, "instruction", "must be a non-empty string, got array"),
        ({"instruction": None, "output": "A"}, "instruction", "must be a non-empty string, got null"),
        ({"instruction": "Q"}, "output", "is missing"),
        ({"instruction": "Q", "output": 4}, "output", "must be a string, got number"),
        ({"instruction": "Q", "input": 3, "output": "A"}, "input", "must be a string, got number"),
    ],
)
def test_alpaca_rejections(record: dict, field: str, reason: str) -> None:
    err = _error(_jsonl(ALPACA, ALPACA, record))
    assert _where(err) == (3, None, field)
    assert err.reason == reason


# --- chat rejections ---------------------------------------------------------------------------------------------


def _turns(*turns: object) -> dict[str, object]:
    return {"conversations": list(turns)}


H, G, S = (
    {"from": "human", "value": "Q"},
    {"from": "gpt", "value": "A"},
    {"from": "system", "value": "Be kind."},
)


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        ({"conversations": H}, "conversations", "must be a list of from/value objects, got object"),
        ({"conversations": None}, "conversations", "got null"),
        (
            _turns(),
            "conversations",
            "must hold a 'human' or 'user' turn followed by a 'gpt' or 'assistant' reply",
        ),
        (_turns(S, S), "conversations", "must hold a 'human' or 'user' turn"),
        (
            _turns(G, H),
            "conversations[0].from",
            "must be 'human' or 'user' (the first turn after any system turn)",
        ),
        (_turns(S, G, H), "conversations[1].from", "got 'gpt'"),
        (_turns(H, H, G), "conversations[1].from", "must be 'gpt' or 'assistant' (the reply to the 'human'"),
        (_turns(S, H, S, G), "conversations[2].from", "got 'system'"),
        (
            _turns(H),
            "conversations[1]",
            "is missing: the human turn must be followed by a 'gpt' or 'assistant'",
        ),
        (_turns(S, H), "conversations[2]", "is missing"),
        (_turns("Q", G), "conversations[0]", "must be an object with 'from' and 'value', got string"),
        (_turns(S, ["human", "Q"], G), "conversations[1]", "got array"),
        (_turns({"value": "Q"}, G), "conversations[0].from", "is missing"),
        (_turns({"from": None, "value": "Q"}, G), "conversations[0].from", "must be a string, got null"),
        (_turns({"from": "Human", "value": "Q"}, G), "conversations[0].from", "got 'Human'"),
        (_turns({"from": "human"}, G), "conversations[0].value", "is missing"),
        (_turns({"from": "human", "value": " "}, G), "conversations[0].value", "must be a non-empty string"),
        (
            _turns(H, {"from": "gpt", "value": [{"type": "text", "text": "A"}]}),
            "conversations[1].value",
            "must be a string, got array",  # content parts are an OpenAI feature only
        ),
        (_turns(H, {"from": "gpt", "value": 42}), "conversations[1].value", "got number"),
    ],
)
def test_sharegpt_rejections(record: dict, field: str, reason: str) -> None:
    err = _error(_jsonl(SHAREGPT, record), filename="chats.jsonl")
    assert _where(err) == (2, None, field)
    assert reason in err.reason


@pytest.mark.parametrize(
    ("messages", "field", "reason"),
    [
        ([{"role": "assistant", "content": "A"}], "messages[0].role", "must be 'user' (the first turn"),
        (
            [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "Q"},
                {"role": "user", "content": "Q"},
            ],
            "messages[2].role",
            "must be 'assistant' (the reply to the 'user' turn), got 'user'",
        ),
        ([{"role": "user", "content": "Q"}], "messages[1]", "is missing: the user turn must be followed"),
        (
            [{"role": "user", "content": "Q"}, {"role": "tool", "content": "{}"}],
            "messages[1].role",
            "got 'tool'",
        ),
        ([{"role": "user"}, {"role": "assistant", "content": "A"}], "messages[0].content", "is missing"),
        ([{"content": "Q"}], "messages[0].role", "is missing"),
        (
            [{"role": "system", "content": "S"}],
            "messages",
            "must hold a 'user' turn followed by a 'assistant' reply",
        ),
        ("Q", "messages", "must be a list of role/content objects, got string"),
    ],
)
def test_openai_rejections(messages: object, field: str, reason: str) -> None:
    err = _error(_jsonl(OPENAI, OPENAI, OPENAI, {"messages": messages}))
    assert _where(err) == (4, None, field)
    assert reason in err.reason


def test_chat_turns_are_checked_in_reading_order() -> None:
    # The empty prompt is reported before the missing reply behind it.
    err = _error(_jsonl(_turns({"from": "human", "value": ""})))
    assert err.field == "conversations[0].value"


# --- locations: JSON Lines, arrays, BOM, CRLF, UTF-8 -------------------------------------------------------------


def test_bad_json_on_line_3_after_a_blank_line() -> None:
    text = _jsonl(ALPACA) + "\n" + '{"instruction": "Q", "output": "A",}\n' + "not json either\n"
    err = _error(text, filename="data.jsonl")
    assert _where(err) == (3, None, None)
    assert str(err).startswith("line 3: invalid JSON: ")


def test_one_line_json_array_names_the_position_of_the_bad_element() -> None:
    text = json.dumps([ALPACA, ALPACA, {"instruction": " ", "output": "A"}, ALPACA])
    err = _error(text, filename="data.json")
    assert _where(err) == (1, 3, "instruction")
    assert str(err) == "line 1 (record 3): field 'instruction': must be a non-empty string"


def test_an_empty_output_is_a_record_for_the_filters_not_a_broken_file() -> None:
    alpaca = parse_item_file(_jsonl(ALPACA, {"instruction": "Q", "output": "  "}), filename="d.jsonl")
    chat = parse_item_file(_jsonl(_turns(H, {"from": "gpt", "value": ""})), filename="d.jsonl")
    assert alpaca[1].output == "" and chat[0].output == ""


def test_pretty_printed_array_names_the_line_where_the_element_starts() -> None:
    records = [_openai(f"Q{i}", f"A{i}") for i in range(3)] + [_openai("Q", [{"type": "audio", "data": ""}])]
    text = json.dumps(records, indent=2)
    err = _error(text, filename="data.json")
    opening_lines = [n for n, line in enumerate(text.splitlines(), start=1) if line == "  {"]
    assert _where(err) == (opening_lines[3], 4, "messages[1].content[0].type")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[{"instruction": "Q", "output": "A"}\n{"instruction": "Q", "output": "A"}]', 2),
        ('[{"instruction": "Q", "output": "A"},\n]', 2),
        ('[{"instruction": "Q", "output": "A"}]\n[]', 2),
        ('[{"instruction": "Q", "output": "A"}', 1),
        ('[\n\n{"instruction": "Q", "output": "A"},\n{"instruction": "Q", "output": "A"', 4),
    ],
)
def test_json_array_syntax_errors(text: str, line: int) -> None:
    err = _error(text)
    assert _where(err) == (line, None, None)
    assert err.reason.startswith("invalid JSON")


def test_first_bad_record_is_reported_before_a_later_syntax_error() -> None:
    assert _where(_error('[{"instruction": "Q", "output": 1},\n{broken')) == (1, 1, "output")
    assert _where(_error(_jsonl(ALPACA, {"instruction": ""}) + "{broken\n")) == (2, None, "instruction")


@pytest.mark.parametrize(
    ("text", "filename"),
    [(_jsonl(ALPACA, ALPACA), "d.jsonl"), (json.dumps([ALPACA, ALPACA]), "d.json"), (_jsonl(OPENAI), None)],
)
def test_utf8_bom_is_ignored(text: str, filename: str | None) -> None:
    expected = parse_item_file(text, filename=filename)
    assert parse_item_file(b"\xef\xbb\xbf" + text.encode("utf-8"), filename=filename) == expected
    assert parse_item_file("\ufeff" + text, filename=filename) == expected


def test_bom_does_not_shift_line_numbers() -> None:
    data = b"\xef\xbb\xbf" + _jsonl(ALPACA, {"instruction": "Q"}).encode("utf-8")
    assert _where(_error(data)) == (2, None, "output")


def test_crlf_line_endings() -> None:
    text = (
        _jsonl(ALPACA, ALPACA).replace("\n", "\r\n")
        + "\r\n"
        + '{"instruction": "Q2", "output": "A\\r\\nB"}\r\n'
    )
    items = parse_item_file(text.encode("utf-8"), filename="crlf.jsonl")
    assert [i.line for i in items] == [1, 2, 4]
    assert items[2].output == "A\r\nB"  # escaped line breaks inside a string are data, kept as written
    err = _error(text + "\r\n" + '{"instruction": "Q"}\r\n')
    assert _where(err) == (6, None, "output")

    array = json.dumps([ALPACA, ALPACA, {"instruction": "Q", "output": 1}], indent=2).replace("\n", "\r\n")
    assert [
        i.line for i in parse_item_file(json.dumps([ALPACA, ALPACA], indent=2).replace("\n", "\r\n"))
    ] == [2, 6]
    assert _where(_error(array, filename="crlf.json")) == (10, 3, "output")


def test_old_mac_cr_line_endings_in_json_lines() -> None:
    text = _jsonl(ALPACA, ALPACA).replace("\n", "\r") + "\r" + '{"instruction": ""}\r'
    assert _where(_error(text)) == (4, None, "instruction")


def test_invalid_utf8_names_line_and_byte_offset() -> None:
    data = b'{"instruction": "Q", "output": "A"}\r\n\n{"instruction": "caf\xe9", "output": "A"}\n'
    err = _error(data, filename="latin1.jsonl")
    assert _where(err) == (3, None, None)
    assert f"invalid UTF-8 at byte offset {data.index(0xE9)}" in str(err)
    assert str(err).startswith("line 3: ")


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"", None),
        ("", "empty.jsonl"),
        (b"\xef\xbb\xbf", "bom.json"),
        (b"  \n\r\n\t", "blank.jsonl"),
        ("[]", "empty.json"),
        (" [ \n ] \n", None),
        ("\n\n", "x.json"),
    ],
)
def test_empty_file(data: bytes | str, filename: str | None) -> None:
    err = _error(data, filename=filename)
    assert _where(err) == (None, None, None)
    assert str(err).startswith("no records")


# --- limits ------------------------------------------------------------------------------------------------------


def test_field_length_limit() -> None:
    at_limit = "x" * MAX_FIELD_CHARS
    [item] = parse_item_file(_jsonl({"instruction": at_limit, "input": at_limit, "output": f" {at_limit} "}))
    assert len(item.instruction) == len(item.input) == len(item.output) == MAX_FIELD_CHARS

    err = _error(_jsonl(ALPACA, {"instruction": "Q", "input": at_limit + "x", "output": "A"}))
    assert _where(err) == (2, None, "input")
    assert "20,001 characters" in err.reason and "20,000" in err.reason
    err = _error(json.dumps([_sharegpt("Q", at_limit + "y")]))
    assert _where(err) == (1, 1, "conversations[1].value")
    parts = [
        {"type": "text", "text": "x" * (MAX_FIELD_CHARS // 2)}
    ] * 2  # joined with a newline: one too many
    assert _where(_error(_jsonl(_openai(parts)))) == (1, None, "messages[0].content")


@pytest.mark.parametrize("bad", ["\\u0000", "\\ud800", "\\udfff"])
@pytest.mark.parametrize(
    ("template", "field"),
    [
        ('{"instruction": "Q%s", "output": "A"}', "instruction"),
        ('{"instruction": "Q", "input": "%s", "output": "A"}', "input"),
        (
            '{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A%s"}]}',
            "conversations[1].value",
        ),
        (
            '{"messages": [{"role": "user", "content": [{"type": "text", "text": "%s"}]}, '
            '{"role": "assistant", "content": "A"}]}',
            "messages[0].content",
        ),
    ],
)
def test_unstorable_characters_are_rejected(bad: str, template: str, field: str) -> None:
    text = template % "fine" + "\n" + template % bad + "\n"
    err = _error(text.encode("utf-8"))
    assert _where(err) == (2, None, field)
    assert "NUL character or an unpaired surrogate" in err.reason


def test_a_paired_surrogate_escape_is_a_normal_character() -> None:
    [item] = parse_item_file('{"instruction": "\\ud83c\\udf31 sprout", "output": "A"}')
    assert item.instruction == "\U0001f331 sprout"


def test_record_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(item_formats, "MAX_RECORDS", 3)
    assert len(parse_item_file(_jsonl(ALPACA, ALPACA, ALPACA))) == 3
    err = _error(_jsonl(ALPACA, ALPACA, ALPACA) + "\n" + _jsonl({"broken": True}))
    assert _where(err) == (5, None, None)
    assert err.reason == "too many records; the limit is 3 per file"
    assert _where(_error(json.dumps([ALPACA] * 4))) == (1, 4, None)


def test_default_record_limit() -> None:
    assert item_formats.MAX_RECORDS == 1_000_000


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    assert _where(_error("[" * 100_000)) == (1, None, None)
    assert _where(_error("\n" + "{" + '"a":[' * 100_000, filename="deep.jsonl")) == (2, None, None)


# --- the error and the item --------------------------------------------------------------------------------------


def test_error_is_a_value_error_with_a_bare_reason_and_never_the_seed_error() -> None:
    err = _error(_jsonl(ALPACA, {"instruction": "Q"}))
    assert isinstance(err, ValueError) and not isinstance(err, SeedFormatError)
    assert err.reason == "is missing"
    assert str(err) == "line 2: field 'output': is missing"
    assert _where(err) == (2, None, "output")
    utf8 = _error(b"\xff")
    assert type(utf8) is ItemFormatError and utf8.line == 1


def test_error_message_formats() -> None:
    assert str(ItemFormatError("bad", line=4, record=2, field="messages[1].role")) == (
        "line 4 (record 2): field 'messages[1].role': bad"
    )
    assert str(ItemFormatError("bad", record=2)) == "record 2: bad"
    assert str(ItemFormatError("no records found")) == "no records found"


def test_item_defaults_and_immutability() -> None:
    item = ItemIn("Q")
    assert (item.input, item.output, item.line) == ("", "", 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.output = "A"  # type: ignore[misc]
