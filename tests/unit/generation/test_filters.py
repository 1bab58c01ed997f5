"""Heuristic filters: every reason code, both scripts, and the configuration knobs."""

from __future__ import annotations

import pytest

from app.dedup.tokenize import cjk_ratio, tokenize
from app.generation.candidates import CandidateItem
from app.generation.filters import (
    DEFAULT_BLOCKLIST,
    FilterConfig,
    FilterReason,
    check_candidate,
    find_blocklisted,
    is_only_punctuation,
    partition_candidates,
    starts_with_punctuation,
)

DEFAULT = FilterConfig()


def reason(
    instruction: str, task_input: str = "", output: str = "A fine answer.", config: FilterConfig = DEFAULT
):
    return check_candidate(CandidateItem(instruction, task_input, output), config)


# --- the tokenizer as the filters use it --------------------------------------------------------------------


def test_tokens_of_english_and_chinese_instructions() -> None:
    assert tokenize("Translate the sentence into French.") == [
        "translate",
        "the",
        "sentence",
        "into",
        "french",
    ]
    assert tokenize("翻译成英文：你好") == ["翻", "译", "成", "英", "文", "你", "好"]
    assert tokenize("用 Python 写 2 行") == ["用", "python", "写", "2", "行"]
    assert cjk_ratio("翻译成英文：你好") == 1.0
    assert cjk_ratio("Translate: 你好") == pytest.approx(2 / 3)


# --- passing items ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "instruction",
    [
        "翻译成英文：你好",
        "写一首关于秋天的短诗。",
        "《红楼梦》的作者是谁？",
        "“知己知彼”是什么意思？",
        "Give three tips for staying healthy.",
        '"Carpe diem" means what in English?',
        "(Optional) Suggest a name for a cat.",
        "2 + 2 equals what? Explain briefly.",
        "$5 is how many cents?",
        "¿Cómo se dice hello en español?",
        "Describe the mapping between keys and values in a dictionary.",
        "Explain what a filesystem is.",
    ],
)
def test_good_instructions_pass(instruction: str) -> None:
    assert reason(instruction) is None


def test_chinese_item_is_never_rejected_for_being_non_ascii() -> None:
    assert reason("把下面的句子改写得更礼貌一些。", "把盐递给我。", "请问您能把盐递给我吗？") is None


# --- one test per reason ------------------------------------------------------------------------------------


@pytest.mark.parametrize("instruction", ["", "   ", "\n\t"])
def test_empty_instruction(instruction: str) -> None:
    assert reason(instruction) == FilterReason.empty_instruction


@pytest.mark.parametrize("instruction", ["Summarize.", "Be nice", "你好", "!!"])
def test_instruction_too_short(instruction: str) -> None:
    assert reason(instruction) == FilterReason.instruction_too_short


def test_minimum_is_inclusive() -> None:
    assert reason("Write a poem.") is None
    assert reason("写首诗") is None


def test_instruction_too_long_uses_the_latin_bound_for_english() -> None:
    assert reason("word " * 150) is None
    assert reason("word " * 151) == FilterReason.instruction_too_long


def test_instruction_too_long_uses_the_cjk_bound_for_chinese() -> None:
    assert reason("字" * 200) is None  # over the Latin bound, within the CJK one
    assert reason("字" * 300) is None
    assert reason("字" * 301) == FilterReason.instruction_too_long


def test_cjk_bounds_are_configurable_separately() -> None:
    config = FilterConfig(min_instruction_tokens_cjk=8, max_instruction_tokens_cjk=10)
    assert reason("翻译成英文：你好", config=config) == FilterReason.instruction_too_short
    assert reason("请把这句话翻译成英文：你好", config=config) == FilterReason.instruction_too_long
    assert reason("Translate this into English.", config=config) is None


def test_a_bound_of_none_is_off() -> None:
    config = FilterConfig(max_instruction_tokens=None, max_input_chars=None, max_output_chars=None)
    assert reason("word " * 1000, "x" * 100_000, "y" * 100_000, config=config) is None


@pytest.mark.parametrize(
    "instruction",
    [
        "- Name three rivers in Asia.",
        "* Name three rivers in Asia.",
        "：列出三条亚洲的河流。",
        "，列出三条亚洲的河流。",
        "。列出三条亚洲的河流。",
        ". Name three rivers in Asia.",
        "? Name three rivers in Asia.",
        ") Name three rivers in Asia.",
        "# Name three rivers in Asia.",
        "+ Name three rivers in Asia.",
        "🌊 Name three rivers in Asia.",
    ],
)
def test_starts_with_punctuation(instruction: str) -> None:
    assert reason(instruction) == FilterReason.starts_with_punctuation


@pytest.mark.parametrize(
    "text", ["你好吗", "9 lives of a cat", "《静夜思》", "“quote”", "(a)", "[x]", "'s", "¥100"]
)
def test_starting_characters_that_are_not_punctuation(text: str) -> None:
    assert starts_with_punctuation(text) is False


@pytest.mark.parametrize(
    "instruction",
    [
        "Describe the image in detail.",
        "Draw a cat using ASCII art.",
        "Look at the MAP and find the river.",
        "Plot the data points for me.",
        "Go to the website and copy the title.",
        "Go   to the store and buy milk for me.",
        "Summarize the video about whales.",
        "Open the attached files and count the lines.",
        "Create a flowchart of the process.",
        "描述这张图片里有什么。",
        "请画一只猫。",
        "绘制一张销售数据的柱状图。",
        "总结这个视频的内容。",
        "根据流程图说明步骤。",
        "打开文件并统计行数。",
        "在地图上标出北京。",
        "请根据这段音乐写一段评论。",
        "用画一张 map 的方式说明。",
    ],
)
def test_blocklisted_keyword(instruction: str) -> None:
    assert reason(instruction) == FilterReason.blocklisted_keyword


@pytest.mark.parametrize(
    "instruction",
    [
        "Explain mapping in category theory.",
        "List the graphical user interface toolkits for Python.",
        "Why do bitmaps use so much memory?",
        "Describe a typical profile of a programmer.",
        "Name three famous drawings by Leonardo.",
        "Name a cargo ship that sank.",
        "What is an imagery technique in poetry?",
    ],
)
def test_blocklist_matches_whole_words_only(instruction: str) -> None:
    assert reason(instruction) is None


def test_blocklist_ignores_the_input() -> None:
    assert reason("Summarize the text below.", "The photo shows a map of the city.", "A city map.") is None


def test_find_blocklisted_reports_the_word_as_written() -> None:
    assert find_blocklisted("Look at this Picture, please.", DEFAULT_BLOCKLIST) == "Picture"
    assert find_blocklisted("描述这张图片", DEFAULT_BLOCKLIST) == "图片"
    assert find_blocklisted("Mapping things", DEFAULT_BLOCKLIST) is None


def test_blocklist_is_configurable() -> None:
    config = FilterConfig(blocklist=("recipe", "菜谱"))
    assert reason("Describe the image in detail.", config=config) is None
    assert reason("Write a recipe for soup.", config=config) == FilterReason.blocklisted_keyword
    assert reason("写一份红烧肉的菜谱。", config=config) == FilterReason.blocklisted_keyword
    assert reason("Describe the image in detail.", config=FilterConfig(blocklist=())) is None


@pytest.mark.parametrize(
    "instruction",
    [
        "Write a program that sorts a list.",
        "write a  program to add numbers",
        "编写一个程序，计算两个数的和。",
    ],
)
def test_starts_with_write_a_program(instruction: str) -> None:
    assert reason(instruction) == FilterReason.starts_with_write_a_program


def test_write_a_program_rule_is_configurable() -> None:
    assert reason("Write a program that sorts a list.", config=FilterConfig(program_prefixes=())) is None
    assert reason("Explain how to write a program that sorts a list.") is None


def test_input_too_long() -> None:
    config = FilterConfig(max_input_chars=10)
    assert reason("Summarize the text below.", "x" * 10, "ok", config=config) is None
    assert reason("Summarize the text below.", "x" * 11, "ok", config=config) == FilterReason.input_too_long


@pytest.mark.parametrize("output", ["", "   ", "\n"])
def test_empty_output(output: str) -> None:
    assert reason("Name a large city.", output=output) == FilterReason.empty_output


@pytest.mark.parametrize("output", ["...", "!!!", "。。。", "？", "- * -", "😀😀", "$ % ^"])
def test_output_only_punctuation(output: str) -> None:
    assert reason("Name a large city.", output=output) == FilterReason.output_only_punctuation


@pytest.mark.parametrize("output", ["42", "A.", "好。", "3.14", "π"])
def test_short_real_outputs_are_not_only_punctuation(output: str) -> None:
    assert is_only_punctuation(output) is False
    assert reason("Give a short answer now.", output=output) is None


def test_output_too_long() -> None:
    config = FilterConfig(max_output_chars=20)
    assert reason("Name a large city.", output="y" * 20, config=config) is None
    assert reason("Name a large city.", output="y" * 21, config=config) == FilterReason.output_too_long


@pytest.mark.parametrize(
    ("task_input", "output"),
    [
        ("Hello world", "hello world"),
        ("  Hello   world \n", "HELLO WORLD"),
        ("你好", "你好 "),
        ("Straße", "STRASSE"),
    ],
)
def test_input_equals_output(task_input: str, output: str) -> None:
    assert reason("Repeat the text exactly.", task_input, output) == FilterReason.input_equals_output


def test_input_differs_from_output() -> None:
    assert reason("Correct the spelling.", "Helo world", "Hello world") is None


# --- order and toggles --------------------------------------------------------------------------------------


def test_first_failing_rule_wins() -> None:
    assert reason("- Draw", output="") == FilterReason.instruction_too_short
    assert reason("- Draw a cat.", output="") == FilterReason.starts_with_punctuation
    assert reason("Draw a cat please.", output="") == FilterReason.blocklisted_keyword


def test_disabled_rules_are_skipped_and_later_rules_still_apply() -> None:
    config = FilterConfig(disabled=frozenset({"starts_with_punctuation", FilterReason.blocklisted_keyword}))
    assert reason("- Draw a cat.", config=config) is None
    assert reason("- Draw a cat.", output="", config=config) == FilterReason.empty_output
    assert config.disabled == {FilterReason.starts_with_punctuation, FilterReason.blocklisted_keyword}


def test_unknown_reason_in_disabled_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown filter reason"):
        FilterConfig(disabled=frozenset({"no_such_rule"}))


def test_reason_values_are_the_stored_strings() -> None:
    assert [r.value for r in FilterReason] == [
        "empty_instruction",
        "instruction_too_short",
        "instruction_too_long",
        "starts_with_punctuation",
        "blocklisted_keyword",
        "starts_with_write_a_program",
        "input_too_long",
        "empty_output",
        "output_only_punctuation",
        "output_too_long",
        "input_equals_output",
    ]
    assert FilterReason.empty_output == "empty_output"


def test_partition_keeps_each_filtered_item_with_its_reason() -> None:
    good = CandidateItem("翻译成英文：你好", "", "Hello")
    bad = CandidateItem("Describe this picture.", "", "A dog.")
    kept, filtered = partition_candidates([good, bad], DEFAULT)
    assert kept == [good]
    assert filtered == [(bad, FilterReason.blocklisted_keyword)]


def test_config_is_hashable_and_immutable() -> None:
    assert hash(FilterConfig()) == hash(FilterConfig())
    with pytest.raises(AttributeError):
        DEFAULT.min_instruction_tokens = 5  # type: ignore[misc]
