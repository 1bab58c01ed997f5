"""Parsing model replies: numbered lists (completions mode) and JSON (chat mode)."""

from __future__ import annotations

import json

import pytest

from app.generation.candidates import CandidateItem
from app.generation.parsing import (
    TASKS_JSON_SCHEMA,
    parse_json_tasks,
    parse_numbered_tasks,
    tasks_json_schema,
)

# What a model writes after a prompt ending in "4. Instruction:".
THREE_ITEMS = (
    " Name the capital of Japan.\n4. Input:\n<noinput>\n4. Output:\nTokyo\n###\n"
    "5. Instruction: Sort the numbers from smallest to largest.\n"
    "5. Input:\n7, 2, 9\n5. Output:\n2, 7, 9\n###\n"
    "6. Instruction: Write a haiku about rain.\n6. Input:\n<noinput>\n6. Output:\nSoft rain on the roof\n"
    "the garden drinks in silence\npuddles hold the sky\n###"
)


def numbered(text: str, finish_reason: str | None = "stop", first_index: int = 4) -> tuple[list[tuple], int]:
    result = parse_numbered_tasks(text, finish_reason=finish_reason, first_index=first_index)
    return [(i.instruction, i.input, i.output) for i in result.items], result.unparsed


def test_numbered_list_with_and_without_inputs() -> None:
    items, unparsed = numbered(THREE_ITEMS)
    assert unparsed == 0
    assert items == [
        ("Name the capital of Japan.", "", "Tokyo"),
        ("Sort the numbers from smallest to largest.", "7, 2, 9", "2, 7, 9"),
        (
            "Write a haiku about rain.",
            "",
            "Soft rain on the roof\nthe garden drinks in silence\npuddles hold the sky",
        ),
    ]


def test_items_are_candidate_items() -> None:
    result = parse_numbered_tasks(THREE_ITEMS, finish_reason="stop", first_index=4)
    assert result.items[0] == CandidateItem("Name the capital of Japan.", "", "Tokyo")


def test_truncated_last_item_is_dropped_only_when_the_reply_hit_the_length_limit() -> None:
    cut = (
        THREE_ITEMS
        + "\n7. Instruction: Explain why the sky is blue.\n7. Input:\n<noinput>\n7. Output:\nBecause of"
    )
    items, unparsed = numbered(cut, finish_reason="length")
    assert [i[0] for i in items] == [
        "Name the capital of Japan.",
        "Sort the numbers from smallest to largest.",
        "Write a haiku about rain.",
    ]
    assert unparsed == 1
    items, unparsed = numbered(cut, finish_reason="stop")
    assert len(items) == 4 and unparsed == 0
    assert items[-1] == ("Explain why the sky is blue.", "", "Because of")


def test_length_drops_the_last_item_even_if_it_looks_complete() -> None:
    text = " Name a color.\n4. Input:\n<noinput>\n4. Output:\nBlue and"
    assert numbered(text, finish_reason="length") == ([], 1)


def test_length_after_a_closing_separator_or_a_bare_number_loses_no_item() -> None:
    items, unparsed = numbered(THREE_ITEMS, finish_reason="length")
    assert len(items) == 3 and unparsed == 0
    items, unparsed = numbered(THREE_ITEMS + "\n7.", finish_reason="length")
    assert len(items) == 3 and unparsed == 0


def test_stop_sequence_remnants_are_ignored() -> None:
    for tail in ("\n", "\n7", "\n7.", "\n7. Instruction:", "\n###\n", "<|im_end|>\n8. Instruction: junk"):
        items, unparsed = numbered(THREE_ITEMS + tail)
        assert (len(items), unparsed) == (3, 0), tail


def test_a_chunk_missing_its_output_is_counted_unparsed() -> None:
    text = (
        " Name a fruit.\n4. Input:\n<noinput>\n###\n"
        "5. Instruction: Name a vegetable.\n5. Input:\n<noinput>\n5. Output:\nCarrot\n###"
    )
    assert numbered(text) == ([("Name a vegetable.", "", "Carrot")], 1)


def test_a_chunk_without_its_input_label_is_a_task_without_input() -> None:
    text = " Name a fruit.\n4. Output:\nApple\n###\n5. 指令：说出一种蔬菜。\n5. 输出：胡萝卜"
    assert numbered(text) == ([("Name a fruit.", "", "Apple"), ("说出一种蔬菜。", "", "胡萝卜")], 0)


def test_a_chunk_with_labels_out_of_order_or_repeated_is_unparsed() -> None:
    text = (
        " A.\n4. Output:\nx\n4. Input:\ny\n###\n"
        "5. Instruction: B.\n5. Input:\nx\n5. Input:\ny\n5. Output:\nz\n###\n"
        "6. Instruction: Say hi.\n6. Input:\n<noinput>\n6. Output:\nHi"
    )
    assert numbered(text) == ([("Say hi.", "", "Hi")], 2)


def test_a_forgotten_separator_still_splits_items() -> None:
    text = (
        " Add 2 and 3.\n4. Input:\n<noinput>\n4. Output:\n5\n"
        "5. Instruction: Add 4 and 4.\n5. Input:\n\n5. Output:\n8"
    )
    assert numbered(text) == ([("Add 2 and 3.", "", "5"), ("Add 4 and 4.", "", "8")], 0)


def test_markdown_noise_missing_numbers_and_extra_spaces() -> None:
    text = (
        " **Summarize the text in one sentence.**\n"
        "**4. Input:** The meeting moved to Monday because the room was booked.\n"
        "4.  **Output**:  The meeting is now on Monday.\n"
        "###\n"
        "Instruction:   Give an antonym of the word.\n"
        "Input :\nhot\n"
        "- Output:\ncold   \n"
        "### 6. Instruction: Name a planet.\n6. Input: <no input>\n6. Output: Mars ###"
    )
    items, unparsed = numbered(text)
    assert unparsed == 0
    assert items == [
        (
            "Summarize the text in one sentence.",
            "The meeting moved to Monday because the room was booked.",
            "The meeting is now on Monday.",
        ),
        ("Give an antonym of the word.", "hot", "cold"),
        ("Name a planet.", "", "Mars"),
    ]


def test_chinese_labels_full_width_colons_and_no_input_marker() -> None:
    text = (
        "把下面的句子翻译成英文。\n4. 输入：\n我喜欢读书。\n4. 输出：\nI like reading.\n###\n"
        "5. 指令：列出三种颜色。\n5. 输入：\n<无输入>\n5. 输出：\n红色、绿色、蓝色\n###\n"
        "6、指令: 写一句关于春天的诗。\n6、输入:\n（无输入）\n6、输出:\n春风又绿江南岸。"
    )
    items, unparsed = numbered(text)
    assert unparsed == 0
    assert items == [
        ("把下面的句子翻译成英文。", "我喜欢读书。", "I like reading."),
        ("列出三种颜色。", "", "红色、绿色、蓝色"),
        ("写一句关于春天的诗。", "", "春风又绿江南岸。"),
    ]


def test_mixed_english_and_chinese_labels_in_one_item() -> None:
    assert numbered("翻译成英文：你好\n4. Input:\n<noinput>\n4. 输出：\nHello") == (
        [("翻译成英文：你好", "", "Hello")],
        0,
    )


def test_markdown_headings_inside_an_output_are_kept() -> None:
    text = (
        " Write a short recipe.\n4. Input:\n<noinput>\n4. Output:\n"
        "### Steps\n1. Boil water.\n2. Add tea.\n###"
    )
    assert numbered(text) == ([("Write a short recipe.", "", "### Steps\n1. Boil water.\n2. Add tea.")], 0)


def test_a_repeated_instruction_label_at_the_start_is_tolerated() -> None:
    assert numbered("\n4. Instruction: Name a bird.\n4. Input:\n<noinput>\n4. Output:\nRobin") == (
        [("Name a bird.", "", "Robin")],
        0,
    )


def test_empty_fields_are_kept_for_the_filters_but_an_empty_instruction_is_not_an_item() -> None:
    text = (
        " Tell a joke.\n4. Input:\n<noinput>\n4. Output:\n\n###\n"
        "5. Instruction:\n###\n5. Input:\nx\n5. Output:\ny"
    )
    items, unparsed = numbered(text)
    assert items == [("Tell a joke.", "", "")]
    assert unparsed == 1  # the orphan "5. Input/Output" chunk; the empty "5. Instruction:" line is a remnant


def test_weak_model_chinese_reply_recorded_from_smollm2() -> None:
    """Shape of a real SmolLM2-135M continuation: empty instructions followed by a separator."""
    text = (
        " \n让我添加你\n4. 输入：\n添加你\n4. 输出：\n添加你\n###\n"
        "5. 指令：\n###\n5. 输入：\n<无输入>\n5. 输出：\n"
        "小芳蜡\n###\n6. 指令：\n###\n6. 输入：\n<无输入>\n6. 输出：\n早酥\n###"
    )
    items, unparsed = numbered(text)
    assert items == [("让我添加你", "添加你", "添加你")]
    assert unparsed == 2


def test_empty_reply_yields_nothing() -> None:
    assert numbered("") == ([], 0)
    assert numbered("", finish_reason="length") == ([], 0)


def test_unparseable_prose_counts_once() -> None:
    assert numbered(" I am sorry, I cannot help with that.") == ([], 1)


# --- JSON ---------------------------------------------------------------------------------------------------

TASKS = [
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris"},
    {"instruction": "把句子翻译成英文。", "input": "你好", "output": "Hello"},
]


def parsed_json(text: str, finish_reason: str | None = "stop") -> tuple[list[tuple], int]:
    result = parse_json_tasks(text, finish_reason=finish_reason)
    return [(i.instruction, i.input, i.output) for i in result.items], result.unparsed


EXPECTED = [("Name the capital of France.", "", "Paris"), ("把句子翻译成英文。", "你好", "Hello")]


def test_json_object_with_tasks() -> None:
    assert parsed_json(json.dumps({"tasks": TASKS}, ensure_ascii=False)) == (EXPECTED, 0)


def test_json_bare_array() -> None:
    assert parsed_json(json.dumps(TASKS)) == (EXPECTED, 0)


@pytest.mark.parametrize("fence", ["```json", "```", "```JSON"])
def test_json_in_a_code_fence_with_chatter(fence: str) -> None:
    text = (
        f"Sure! Here are the tasks:\n{fence}\n{json.dumps({'tasks': TASKS}, indent=2)}\n```\nHope this helps."
    )
    assert parsed_json(text) == (EXPECTED, 0)


def test_json_task_objects_one_after_another() -> None:
    text = "\n".join(json.dumps(task) for task in TASKS)
    assert parsed_json(text) == (EXPECTED, 0)


def test_prose_brackets_before_the_json_are_skipped() -> None:
    text = "[Note] the tasks follow: " + json.dumps({"tasks": TASKS})
    assert parsed_json(text) == (EXPECTED, 0)


def test_truncated_json_keeps_the_complete_tasks() -> None:
    full = json.dumps(
        {"tasks": [*TASKS, {"instruction": "Explain gravity.", "input": "", "output": "Gravity is"}]}
    )
    cut = full[: full.index("Gravity is") + 7]
    assert parsed_json(cut, finish_reason="length") == (EXPECTED, 1)
    assert parsed_json(json.dumps(TASKS)[:-30], finish_reason="length") == ([EXPECTED[0]], 1)


def test_truncated_json_cut_between_elements_loses_nothing() -> None:
    text = json.dumps({"tasks": TASKS})
    assert parsed_json(text[: text.rindex("}") - 1] + ", ", finish_reason="length") == (EXPECTED, 0)


def test_truncated_json_under_another_key_is_salvaged_too() -> None:
    text = json.dumps({"items": [*TASKS, {"instruction": "x"}]})[:-20]
    assert parsed_json(text, finish_reason="length") == (EXPECTED, 1)


def test_malformed_json_with_stop_is_salvaged_as_well() -> None:
    text = json.dumps({"tasks": TASKS})[:-2] + ', {"instruction": "bad" "output": 1}]}'
    assert parsed_json(text, finish_reason="stop") == (EXPECTED, 1)


@pytest.mark.parametrize(
    "text", ["", "   ", "I cannot do that.", '{"tasks": []}', '{"tasks": "none"}', '{"tasks": [{"instr']
)
def test_garbage_counts_as_one_unparsed(text: str) -> None:
    assert parsed_json(text) == ([], 1)


def test_elements_missing_fields_or_with_wrong_types() -> None:
    tasks = [
        {"instruction": "No input key.", "output": "ok"},
        {"instruction": "Null input.", "input": None, "output": "ok"},
        {"instruction": "Number output.", "input": "2+2", "output": 4},
        {"instruction": "No output key.", "input": ""},
        {"instruction": "  ", "input": "", "output": "blank instruction"},
        {"input": "", "output": "no instruction"},
        {"instruction": ["a list"], "input": "", "output": "x"},
        {"instruction": "List input.", "input": ["a"], "output": "x"},
        "just a string",
        {"instruction": "Empty output is kept for the filters.", "input": "", "output": ""},
    ]
    items, unparsed = parsed_json(json.dumps({"tasks": tasks}))
    assert items == [
        ("No input key.", "", "ok"),
        ("Null input.", "", "ok"),
        ("Number output.", "2+2", "4"),
        ("Empty output is kept for the filters.", "", ""),
    ]
    assert unparsed == 6


def test_whitespace_around_fields_is_stripped() -> None:
    text = json.dumps([{"instruction": "  Say hi. ", "input": "\n", "output": " Hi \n"}])
    assert parsed_json(text) == ([("Say hi.", "", "Hi")], 0)


def test_special_tokens_end_the_reply() -> None:
    text = json.dumps({"tasks": TASKS[:1]}) + "<|im_end|>\n" + json.dumps({"tasks": TASKS[1:]})
    assert parsed_json(text) == ([EXPECTED[0]], 0)


def test_weak_model_reply_recorded_from_smollm2() -> None:
    text = '{ "tasks": [{"instruction": "翻译成英文：你好", "input": "", "output": "Hello" }] }'
    assert parsed_json(text) == ([("翻译成英文：你好", "", "Hello")], 0)


# --- schema -------------------------------------------------------------------------------------------------


def test_schema_shape() -> None:
    tasks = TASKS_JSON_SCHEMA["properties"]["tasks"]
    item = tasks["items"]
    assert TASKS_JSON_SCHEMA["required"] == ["tasks"]
    assert TASKS_JSON_SCHEMA["additionalProperties"] is False
    assert tasks["minItems"] == 1 and "maxItems" not in tasks
    assert item["required"] == ["instruction", "input", "output"]
    assert item["additionalProperties"] is False
    assert {name: spec["type"] for name, spec in item["properties"].items()} == {
        "instruction": "string",
        "input": "string",
        "output": "string",
    }


def test_schema_caps_the_array_at_the_number_of_tasks_asked_for() -> None:
    assert tasks_json_schema(5)["properties"]["tasks"]["maxItems"] == 5
    with pytest.raises(ValueError):
        tasks_json_schema(0)


def test_schema_is_not_shared_mutable_state() -> None:
    schema = tasks_json_schema(3)
    schema["properties"]["tasks"]["items"]["required"].append("extra")
    assert TASKS_JSON_SCHEMA["properties"]["tasks"]["items"]["required"] == ["instruction", "input", "output"]


def test_bold_inside_a_value_is_kept() -> None:
    text = (
        " Explain the **main** idea of the text.\n"
        "4. Input:\n**Cats** sleep a lot. **Dogs** do too.\n4. Output:\nPets rest."
    )
    assert numbered(text) == (
        [("Explain the **main** idea of the text.", "**Cats** sleep a lot. **Dogs** do too.", "Pets rest.")],
        0,
    )


# --- hostile input ------------------------------------------------------------------------------------------

HOSTILE = [
    " " * 20_000 + "x",
    "\t " * 10_000 + "x",
    "*" * 20_000 + "x",
    "* " * 10_000 + "x",
    "-" * 20_000,
    "[" * 20_000,
    "{" * 20_000,
    '{"tasks": [' * 5_000,
    "<|" * 10_000,
    "4. " * 10_000 + "Instruction",
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", HOSTILE, ids=lambda text: repr(text[:6]))
def test_hostile_replies_parse_quickly(text: str) -> None:
    """Long runs of spaces, stars or brackets once made a label regex backtrack for minutes."""
    numbered_result = parse_numbered_tasks(text, finish_reason="stop", first_index=4)
    json_result = parse_json_tasks(text, finish_reason="stop")
    assert numbered_result.items == [] and json_result.items == []


def test_bold_label_on_its_own_line_before_bold_text() -> None:
    text = " Name two pets.\n**4. Input:**\n**Cats** and *dogs*\n**4. Output:** *Cats* and dogs."
    assert numbered(text) == ([("Name two pets.", "**Cats** and *dogs*", "*Cats* and dogs.")], 0)


def test_raw_newlines_inside_json_strings_are_read_as_text() -> None:
    text = '{"tasks": [{"instruction": "Write a haiku\nabout rain.", "input": "", "output": "Drops\tfall."}]}'
    text = text.replace("\\n", "\n").replace("\\t", "\t")  # real control characters, as models emit them
    [item] = parse_json_tasks(text, finish_reason="stop").items
    assert item.instruction == "Write a haiku\nabout rain." and item.output == "Drops\tfall."
