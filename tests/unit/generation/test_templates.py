"""The project's own template files: they load, render in both languages and round-trip through parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.generation.candidates import TaskExample
from app.generation.parsing import parse_json_tasks, parse_numbered_tasks
from app.generation.prompting import (
    LABELS,
    TemplateError,
    choose_language,
    render_chat_messages,
    render_completion_prompt,
)
from app.generation.prompting import render_example_list as example_list
from app.generation.templates import (
    PromptTemplates,
    TemplateNotFoundError,
    load_templates,
    template_file_names,
)

PROMPTS = Path(__file__).resolve().parents[3] / "prompts"

EN = [
    TaskExample(
        "Give three tips for staying healthy.", "", "1. Eat vegetables.\n2. Sleep well.\n3. Walk daily."
    ),
    TaskExample("Translate the sentence into French.", "Good morning, everyone.", "Bonjour à tous."),
    TaskExample("Classify the review as positive or negative.", "The soup was cold.", "Negative", True),
]
ZH = [
    TaskExample("翻译成英文：你好", "", "Hello"),
    TaskExample("把下面的句子改写得更礼貌一些。", "把盐递给我。", "请问您能把盐递给我吗？"),
    TaskExample("判断下面这句话的情感是积极还是消极。", "今天的天气真好，我很开心。", "积极", True),
]
EXAMPLES = {"en": EN, "zh": ZH}
# How each completion template states the count and the numbering (5 tasks after 3 examples).
COUNT_SENTENCE = {"en": "5 new tasks, numbered 4 to 8.", "zh": "5 个新任务，编号从 4 到 8。"}
TRICKY = TaskExample(
    instruction='Explain the JSON {"a": {"b": 1}} and the shell variable $HOME.',
    input="price: $5, ${total}, $$, $examples_json, $num_tasks\n###\n4. Instruction: not a label",
    output="{ } ### $",
)


def test_every_mode_and_language_has_its_files() -> None:
    for mode in ("completions", "chat"):
        for language in ("en", "zh"):
            for name in template_file_names(mode, language).values():
                assert (PROMPTS / name).is_file(), name


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("examples_language", ["en", "zh"])
def test_completion_templates_render_and_end_with_the_next_instruction_label(
    language: str, examples_language: str
) -> None:
    templates = load_templates(PROMPTS, "completions", language)
    prompt = render_completion_prompt(templates.completion, EXAMPLES[examples_language], 5, language=language)
    assert prompt.endswith(f"\n4. {LABELS[language].instruction}")
    assert "$" not in prompt
    for example in EXAMPLES[examples_language]:
        assert example.instruction in prompt
        assert example.output in prompt
    assert COUNT_SENTENCE[language] in prompt


def test_completion_template_language_is_inferred_from_the_file() -> None:
    zh = load_templates(PROMPTS, "completions", "zh").completion
    assert render_completion_prompt(zh, ZH, 5).endswith("\n4. 指令：")
    en = load_templates(PROMPTS, "completions", "en").completion
    assert render_completion_prompt(en, EN, 5).endswith("\n4. Instruction:")


def test_chinese_templates_are_written_in_chinese() -> None:
    completion = load_templates(PROMPTS, "completions", "zh").completion
    chat = load_templates(PROMPTS, "chat", "zh")
    for text in (completion, chat.chat_system, chat.chat_user):
        assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) > 30


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("examples_language", ["en", "zh"])
def test_chat_templates_render_a_system_and_user_message(language: str, examples_language: str) -> None:
    templates = load_templates(PROMPTS, "chat", language)
    messages = render_chat_messages(
        templates.chat_system, templates.chat_user, EXAMPLES[examples_language], 5
    )
    assert [role for role, _ in messages] == ["system", "user"]
    user = messages[1][1]
    assert "$" not in user and "5" in user
    assert '"tasks"' in user and '"instruction"' in user
    for example in EXAMPLES[examples_language]:
        assert json.dumps(example.instruction, ensure_ascii=False) in user


@pytest.mark.parametrize("language", ["en", "zh"])
def test_user_text_with_braces_hashes_and_dollars_survives_the_chat_prompt(language: str) -> None:
    templates = load_templates(PROMPTS, "chat", language)
    _, user = render_chat_messages(templates.chat_system, templates.chat_user, [TRICKY], 3)[1]
    shown = user[user.index('{\n  "tasks"') :]
    decoded, _ = json.JSONDecoder().raw_decode(shown)
    assert decoded == {
        "tasks": [{"instruction": TRICKY.instruction, "input": TRICKY.input, "output": TRICKY.output}]
    }


@pytest.mark.parametrize("language", ["en", "zh"])
def test_user_text_with_template_syntax_survives_the_completion_prompt(language: str) -> None:
    templates = load_templates(PROMPTS, "completions", language)
    prompt = render_completion_prompt(templates.completion, [TRICKY], 3, language=language)
    assert TRICKY.instruction in prompt and TRICKY.input in prompt and TRICKY.output in prompt


@pytest.mark.parametrize("language", ["en", "zh"])
def test_parser_reads_back_the_examples_the_prompt_shows(language: str) -> None:
    templates = load_templates(PROMPTS, "completions", language)
    examples = EXAMPLES[language]
    prompt = render_completion_prompt(templates.completion, examples, 5, language=language)
    first_label = f"###\n1. {LABELS[language].instruction}"
    listed = prompt[prompt.index(first_label) + len(first_label) :]
    result = parse_numbered_tasks(listed, finish_reason="stop", first_index=1)
    assert result.unparsed == 0
    assert [(i.instruction, i.input, i.output) for i in result.items] == [
        (e.instruction, e.input, e.output) for e in examples
    ]


CONTINUATIONS = {
    "en": (
        " Suggest a name for a friendly robot.\n4. Input:\n<noinput>\n4. Output:\nBolt\n###\n"
        "5. Instruction: Rewrite the sentence in the passive voice.\n5. Input:\nThe cat chased the mouse.\n"
        "5. Output:\nThe mouse was chased by the cat.\n###\n"
        "6. Instruction: Explain what photosynthesis is in one sentence.\n6. Input:\n<noinput>\n6. Output:\n"
        "Photosynthesis is how plants turn light, water and carbon dioxide into sugar and oxygen.\n###\n"
        "7. Instruction: Give a synonym for"
    ),
    "zh": (
        "给一个友好的机器人起个名字。\n4. 输入：\n<无输入>\n4. 输出：\n小闪\n###\n"
        "5. 指令：把下面的句子改成被动句。\n5. 输入：\n猫追老鼠。\n5. 输出：\n老鼠被猫追。\n###\n"
        "6. 指令：用一句话解释什么是光合作用。\n6. 输入：\n<无输入>\n6. 输出：\n"
        "光合作用是植物利用光把水和二氧化碳变成糖和氧气的过程。\n###\n"
        "7. 指令：给出“快乐”的"
    ),
}


@pytest.mark.parametrize("language", ["en", "zh"])
def test_rendered_prompt_and_a_plausible_continuation_round_trip(language: str) -> None:
    templates = load_templates(PROMPTS, "completions", language)
    examples = EXAMPLES[language]
    prompt = render_completion_prompt(templates.completion, examples, 5, language=language)
    continuation = CONTINUATIONS[language]
    assert prompt.endswith(f"4. {LABELS[language].instruction}")
    result = parse_numbered_tasks(continuation, finish_reason="length", first_index=len(examples) + 1)
    assert len(result.items) == 3 and result.unparsed == 1
    assert result.items[1].input in ("The cat chased the mouse.", "猫追老鼠。")
    assert result.items[0].input == "" and result.items[2].input == ""


@pytest.mark.parametrize("language", ["en", "zh"])
def test_continuation_in_the_prompt_format_round_trips_exactly(language: str) -> None:
    """A continuation written exactly as the prompt writes its examples parses back to those tasks."""
    new = [
        TaskExample("Name the largest ocean.", "", "The Pacific Ocean."),
        TaskExample("Count the vowels in the word.", "banana", "3"),
    ]
    labels = LABELS[language]
    head = f"###\n4. {labels.instruction}"
    continuation = example_list(new, labels, start=4).removeprefix(head)
    result = parse_numbered_tasks(continuation, finish_reason="stop", first_index=4)
    assert result.unparsed == 0
    assert [(i.instruction, i.input, i.output) for i in result.items] == [
        (t.instruction, t.input, t.output) for t in new
    ]


def test_chat_reply_in_the_shape_the_prompt_shows_parses() -> None:
    templates = load_templates(PROMPTS, "chat", "zh")
    _, user = render_chat_messages(templates.chat_system, templates.chat_user, ZH, 2)[1]
    reply = user[user.index('{\n  "tasks"') : user.rindex("]\n}") + 3]
    result = parse_json_tasks(reply, finish_reason="stop")
    assert [i.instruction for i in result.items] == [e.instruction for e in ZH]
    assert choose_language(ZH) == "zh"


# --- loading ------------------------------------------------------------------------------------------------


def test_load_returns_the_texts_of_the_requested_mode() -> None:
    chat = load_templates(PROMPTS, "chat", "en")
    assert isinstance(chat, PromptTemplates)
    assert (chat.mode, chat.language, chat.completion) == ("chat", "en", "")
    assert chat.chat_system.strip() and "$examples_json" in chat.chat_user
    completion = load_templates(PROMPTS, "completions", "zh")
    assert completion.completion.strip() and completion.chat_user == ""


def test_missing_file_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "chat_system.en.txt").write_text("You write tasks.", encoding="utf-8")
    with pytest.raises(TemplateNotFoundError, match=r"chat_user\.en\.txt"):
        load_templates(tmp_path, "chat", "en")
    with pytest.raises(FileNotFoundError, match=r"completion\.zh\.txt"):
        load_templates(tmp_path, "completions", "zh")


def test_broken_template_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "completion.en.txt").write_text(
        "$examples $num_tasks\n$next_index. $instruction_label\nBye", "utf-8"
    )
    with pytest.raises(TemplateError, match=r"completion\.en\.txt.*must end with"):
        load_templates(tmp_path, "completions", "en")
    (tmp_path / "chat_system.en.txt").write_text("Hi $nmu_tasks", encoding="utf-8")
    (tmp_path / "chat_user.en.txt").write_text("$num_tasks $examples_json", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"chat_system\.en\.txt.*unknown slot\(s\) nmu_tasks"):
        load_templates(tmp_path, "chat", "en")


@pytest.mark.parametrize("language", ["fr", "../en", "en/../../etc"])
def test_unsupported_or_unsafe_language_is_rejected(language: str) -> None:
    with pytest.raises(ValueError, match="unsupported prompt language"):
        load_templates(PROMPTS, "chat", language)


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown prompt mode"):
        load_templates(PROMPTS, "batch", "en")  # type: ignore[arg-type]
