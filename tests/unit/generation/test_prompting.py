"""Prompt rendering: slots, numbering, language choice, and user text that must survive untouched."""

from __future__ import annotations

import json
import re

import pytest

from app.generation.candidates import TaskExample
from app.generation.prompting import (
    LABELS,
    TemplateError,
    check_template,
    choose_language,
    completion_stop_sequences,
    examples_json,
    next_index,
    render_chat_messages,
    render_completion_prompt,
    render_example_list,
    template_language,
)

EN = [
    TaskExample("Give three tips for staying healthy.", "", "1. Eat well.\n2. Sleep.\n3. Move."),
    TaskExample("Translate the sentence into French.", "Good morning.", "Bonjour."),
    TaskExample("Is the review positive or negative?", "The food was cold.", "Negative"),
]
ZH = [
    TaskExample("翻译成英文：你好", "", "Hello"),
    TaskExample("把下面的句子改写得更礼貌一些。", "把盐递给我。", "请问您能把盐递给我吗？"),
    TaskExample("列出三种常见的水果。", "", "苹果、香蕉、橙子"),
]

COMPLETION = (
    "Write $num_tasks tasks, $next_index to $last_index.\n$examples\n$next_index. $instruction_label\n"
)
COMPLETION_ZH = (
    "请写 $num_tasks 个任务，编号从 $next_index 到 $last_index。\n"
    "$examples\n$next_index. $instruction_label\n"
)


def test_examples_are_numbered_from_one_and_the_prompt_ends_with_the_next_label() -> None:
    prompt = render_completion_prompt(COMPLETION, EN, 5)
    assert prompt.endswith("\n4. Instruction:")
    assert "Write 5 tasks, 4 to 8." in prompt
    assert "1. Instruction: Give three tips" in prompt
    assert "3. Input:\nThe food was cold.\n3. Output:\nNegative\n###\n4. Instruction:" in prompt


def test_an_empty_input_is_shown_as_the_no_input_marker() -> None:
    prompt = render_completion_prompt(COMPLETION, EN, 2)
    assert "1. Input:\n<noinput>\n1. Output:" in prompt
    assert "2. Input:\nGood morning.\n" in prompt


def test_example_blocks_are_separated_by_hash_lines() -> None:
    rendered = render_example_list(EN[:2], LABELS["en"])
    assert rendered.startswith("###\n1. Instruction:")
    assert rendered.endswith("\n###")
    assert rendered.count("###") == 3


def test_chinese_template_gets_chinese_labels_without_a_space_after_the_full_width_colon() -> None:
    prompt = render_completion_prompt(COMPLETION_ZH, ZH, 3)
    assert prompt.endswith("\n4. 指令：")
    assert "1. 指令：翻译成英文：你好\n1. 输入：\n<无输入>\n1. 输出：\nHello" in prompt


def test_explicit_language_overrides_the_template_language() -> None:
    prompt = render_completion_prompt(COMPLETION, EN, 1, language="zh")
    assert prompt.endswith("\n4. 指令：")
    assert "1. 输入：\n<无输入>" in prompt


def test_template_language_is_read_from_the_template_text() -> None:
    assert template_language(COMPLETION) == "en"
    assert template_language(COMPLETION_ZH) == "zh"


def test_next_index_follows_the_examples() -> None:
    assert next_index(0) == 1
    assert next_index(3) == 4
    assert render_completion_prompt(COMPLETION, [], 2).endswith("1. Instruction:")


def test_stop_sequences_name_the_item_after_the_last_one_asked_for() -> None:
    stops = completion_stop_sequences(3, 5)
    assert "###\n9." in stops
    assert "\n9. Instruction:" in stops
    assert "\n9." not in stops, "a bare number would stop inside a numbered output"
    assert "\n9. 指令：" in completion_stop_sequences(3, 5, language="zh")


def test_user_text_with_template_syntax_survives_the_completion_prompt() -> None:
    tricky = TaskExample("Explain what {name} and $HOME mean.", "cost: $5 ${x} $$ $examples", "A {b} ### c")
    prompt = render_completion_prompt(COMPLETION, [tricky], 1)
    assert "1. Instruction: Explain what {name} and $HOME mean." in prompt
    assert "cost: $5 ${x} $$ $examples" in prompt
    assert "A {b} ### c" in prompt


def test_chat_messages_are_a_system_and_a_user_message_with_the_examples_as_json() -> None:
    messages = render_chat_messages(
        "  You write tasks.\n",
        'Write $num_tasks tasks like these $num_examples:\n$examples_json\n{"tasks": []}',
        EN,
        4,
    )
    assert [role for role, _ in messages] == ["system", "user"]
    assert messages[0][1] == "You write tasks."
    user = messages[1][1]
    assert user.startswith("Write 4 tasks like these 3:")
    assert user.endswith('{"tasks": []}')
    shown = json.loads(user[user.index("{") : user.rindex('{"tasks": []}')])
    assert shown["tasks"][1] == {
        "instruction": "Translate the sentence into French.",
        "input": "Good morning.",
        "output": "Bonjour.",
    }


def test_an_empty_system_template_sends_no_system_message() -> None:
    messages = render_chat_messages("\n", "$num_tasks\n$examples_json", EN, 1)
    assert [role for role, _ in messages] == ["user"]


def test_examples_json_keeps_chinese_readable_and_round_trips() -> None:
    text = examples_json(ZH)
    assert "翻译成英文：你好" in text
    assert json.loads(text)["tasks"][0] == {"instruction": "翻译成英文：你好", "input": "", "output": "Hello"}


@pytest.mark.parametrize(
    ("ratio_of_chinese", "expected"),
    [(0, "en"), (1, "en"), (2, "zh"), (3, "zh")],
)
def test_choose_language_follows_the_majority_of_examples(ratio_of_chinese: int, expected: str) -> None:
    examples = ZH[:ratio_of_chinese] + EN[: 3 - ratio_of_chinese]
    assert choose_language(examples) == expected


def test_choose_language_ties_and_empty_lists_fall_back_to_english() -> None:
    assert choose_language([]) == "en"
    assert choose_language([ZH[0], EN[0]]) == "en"


def test_choose_language_looks_at_the_instruction_not_at_a_translated_output() -> None:
    assert (
        choose_language([TaskExample("Translate into Chinese: good night", "", "晚安，祝你做个好梦")]) == "en"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("$examples $num_tasks $next_index. $instruction_label $bogus", "unknown slot(s) bogus"),
        ("$num_tasks $next_index. $instruction_label", "missing required slot(s) examples"),
        ("costs 5$ $examples $num_tasks $next_index. $instruction_label", "invalid '$' placeholder"),
        ("$examples $num_tasks\n$next_index. $instruction_label\nThanks!", "must end with '2. Instruction:'"),
    ],
)
def test_broken_completion_templates_fail_with_a_clear_message(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        render_completion_prompt(template, EN[:1], 1)


def test_chat_user_template_requires_the_examples_and_the_count() -> None:
    with pytest.raises(TemplateError, match="missing required slot"):
        render_chat_messages("", "Write some tasks.", EN, 3)


def test_check_template_accepts_dollar_escapes_and_braced_slots() -> None:
    check_template("$$5 and ${num_tasks}", allowed=frozenset({"num_tasks"}), required=frozenset(), name="t")


def test_num_tasks_must_be_positive() -> None:
    with pytest.raises(ValueError, match="num_tasks"):
        render_completion_prompt(COMPLETION, EN, 0)
    with pytest.raises(ValueError, match="num_tasks"):
        render_chat_messages("", "$num_tasks $examples_json", EN, 0)


def test_unknown_language_is_rejected() -> None:
    with pytest.raises(ValueError, match="supported: en, zh"):
        render_completion_prompt(COMPLETION, EN, 1, language="fr")
