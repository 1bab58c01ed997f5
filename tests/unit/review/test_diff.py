"""diff_segments: token-level highlights (one token per CJK character), exact reconstruction, bounded work."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.review.diff import Segment, diff_segments, segments_as_dicts, tokenize


def rebuild(segments: list[Segment]) -> tuple[str, str]:
    a = "".join(s.text for s in segments if s.op != "insert")
    b = "".join(s.text for s in segments if s.op != "delete")
    return a, b


def assert_well_formed(segments: list[Segment], a: str, b: str) -> None:
    assert rebuild(segments) == (a, b)
    assert all(s.op in ("equal", "delete", "insert") for s in segments)
    assert all(s.text for s in segments)
    assert all(x.op != y.op for x, y in zip(segments, segments[1:], strict=False))


def ops(segments: list[Segment]) -> list[tuple[str, str]]:
    return [(s.op, s.text) for s in segments]


# --- tokenize -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", []),
        ("Hello,  world! 123abc", ["Hello", ",", "  ", "world", "!", " ", "123abc"]),
        ("snake_case\tx-y", ["snake", "_", "case", "\t", "x", "-", "y"]),
        ("line\r\n\n next", ["line", "\r\n\n ", "next"]),
        ("翻译成英文：你好", ["翻", "译", "成", "英", "文", "：", "你", "好"]),  # noqa: RUF001 (a Chinese colon)
        ("AI模型v2版", ["AI", "模", "型", "v2", "版"]),
        ("東京タワーへ", ["東", "京", "タ", "ワ", "ー", "へ"]),
        ("안녕 세상", ["안", "녕", " ", "세", "상"]),
        ("ｶﾀｶﾅ", ["ｶ", "ﾀ", "ｶ", "ﾅ"]),  # halfwidth katakana  # noqa: RUF001
        ("𠀀𠀁", ["𠀀", "𠀁"]),  # CJK extension B, outside the BMP
        ("Привет, мир", ["Привет", ",", " ", "мир"]),
        ("مرحبا بالعالم", ["مرحبا", " ", "بالعالم"]),
        ("नमस्ते दुनिया", ["नमस्ते", " ", "दुनिया"]),  # Devanagari vowel signs are marks inside the word
        ("x²+½", ["x²", "+", "½"]),
        ("<b>&amp;</b>", ["<", "b", ">", "&", "amp", ";", "<", "/", "b", ">"]),
    ],
)
def test_tokenize(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("cafe\u0301 noir", ["cafe\u0301", " ", "noir"]),  # decomposed é stays in its word
        ("\u0301x", ["\u0301", "x"]),  # a mark with nothing before it stands alone
        ("a \u0301b", ["a", " ", "\u0301", "b"]),  # whitespace never takes a mark
        ("か\u3099き", ["か\u3099", "き"]),  # combining dakuten stays on its kana
        ("!\u20dd?", ["!\u20dd", "?"]),  # an enclosing mark stays on its symbol
        ("👍🏽👍", ["👍🏽", "👍"]),  # skin tone modifier
        ("❤️!", ["❤️", "!"]),  # variation selector 16
        ("👨\u200d👩\u200d👧 ok", ["👨\u200d👩\u200d👧", " ", "ok"]),  # family: one joined sequence
        ("👩\u200d⚕️", ["👩\u200d⚕️"]),  # joiner, then a symbol with its variation selector
        ("a\u200d b", ["a\u200d", " ", "b"]),  # a joiner before a space glues nothing
        ("🇫🇷🇩🇪🇮", ["🇫🇷", "🇩🇪", "🇮"]),  # flags are pairs of regional indicators
        (
            "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
            ["🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"],
        ),
    ],
)
def test_tokenize_keeps_what_reads_as_one_character_together(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


# --- diff_segments: hand-checked cases --------------------------------------------------------------------------


def test_chinese_highlights_a_single_character() -> None:
    a, b = "翻译成英文：你好", "翻译成法文：你好"  # noqa: RUF001 (a Chinese colon)
    assert ops(diff_segments(a, b)) == [
        ("equal", "翻译成"),
        ("delete", "英"),
        ("insert", "法"),
        ("equal", "文：你好"),  # noqa: RUF001
    ]


def test_english_highlights_whole_words() -> None:
    assert ops(diff_segments("The quick brown fox.", "The slow brown fox!")) == [
        ("equal", "The "),
        ("delete", "quick"),
        ("insert", "slow"),
        ("equal", " brown fox"),
        ("delete", "."),
        ("insert", "!"),
    ]


def test_a_changed_word_is_replaced_whole_not_by_letters() -> None:
    assert ops(diff_segments("run tests", "runs tests")) == [
        ("delete", "run"),
        ("insert", "runs"),
        ("equal", " tests"),
    ]


def test_pure_insertion_and_deletion() -> None:
    assert ops(diff_segments("Give tips.", "Give three tips.")) == [
        ("equal", "Give "),
        ("insert", "three "),
        ("equal", "tips."),
    ]
    assert ops(diff_segments("Give three tips.", "Give tips.")) == [
        ("equal", "Give "),
        ("delete", "three "),
        ("equal", "tips."),
    ]


def test_mixed_scripts() -> None:
    assert ops(diff_segments("用Python写一个函数", "用Rust写两个函数")) == [
        ("equal", "用"),
        ("delete", "Python"),
        ("insert", "Rust"),
        ("equal", "写"),
        ("delete", "一"),
        ("insert", "两"),
        ("equal", "个函数"),
    ]


def test_replacement_is_deletion_then_insertion_even_when_b_is_shorter() -> None:
    assert ops(diff_segments("alpha beta gamma", "alpha x gamma")) == [
        ("equal", "alpha "),
        ("delete", "beta"),
        ("insert", "x"),
        ("equal", " gamma"),
    ]


def test_a_modified_emoji_is_highlighted_whole() -> None:
    assert ops(diff_segments("ok 👍🏻", "ok 👍🏿")) == [
        ("equal", "ok "),
        ("delete", "👍🏻"),
        ("insert", "👍🏿"),
    ]


@pytest.mark.parametrize("text", ["x", "Same text.", "同じ文章", "👨\u200d👩\u200d👧", " \n "])
def test_identical_texts_are_one_equal_segment(text: str) -> None:
    assert diff_segments(text, text) == [Segment("equal", text)]


def test_empty_texts() -> None:
    assert diff_segments("", "") == []
    assert diff_segments("", "new") == [Segment("insert", "new")]
    assert diff_segments("old", "") == [Segment("delete", "old")]


def test_texts_with_nothing_in_common() -> None:
    assert diff_segments("abc", "xyz") == [Segment("delete", "abc"), Segment("insert", "xyz")]


def test_untrusted_markup_passes_through_verbatim() -> None:
    # The module splits strings and nothing else: escaping is the renderer's job (it uses textContent).
    markup = "<script>alert('x')</script>&amp;"
    assert diff_segments("", markup) == [Segment("insert", markup)]
    a, b = "Say <b>hi</b>", f"Say {markup}"
    segments = diff_segments(a, b)
    assert_well_formed(segments, a, b)
    assert ("insert", "alert('x')") in ops(segments)
    assert ops(segments)[-1] == ("insert", "&amp;")  # not unescaped either


def test_segments_as_dicts() -> None:
    segments = diff_segments("a b", "a c")
    assert segments_as_dicts(segments) == [
        {"op": "equal", "text": "a "},
        {"op": "delete", "text": "b"},
        {"op": "insert", "text": "c"},
    ]
    assert segments_as_dicts([]) == []
    assert segments_as_dicts(iter(segments)) == segments_as_dicts(segments)


def test_segment_is_a_frozen_slotted_value() -> None:
    segment = Segment("equal", "x")
    assert segment == Segment("equal", "x")
    assert not hasattr(segment, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        segment.text = "y"  # type: ignore[misc]


# --- alignment ---------------------------------------------------------------------------------------------------


def lcs_length(a: list[str], b: list[str]) -> int:
    """The textbook dynamic programme, to check the alignment against."""
    row = [0] * (len(b) + 1)
    for x in a:
        previous = 0
        for j, y in enumerate(b, start=1):
            previous, row[j] = row[j], previous + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def test_a_reordering_keeps_the_longest_run_in_place() -> None:
    a, b = "one two three", "three two one"
    segments = diff_segments(a, b)
    assert_well_formed(segments, a, b)
    # Three of the five tokens ("one", " ", " " or " two ") can stay; which ones is the aligner's choice.
    assert (
        sum(len(tokenize(s.text)) for s in segments if s.op == "equal")
        == lcs_length(tokenize(a), tokenize(b))
        == 3
    )


def test_a_small_edit_in_a_long_text_stays_small() -> None:
    words = [f"word{i % 97}" for i in range(3_000)]
    a = " ".join(words)
    words[1_500] = "CHANGED"
    b = " ".join(words)
    assert len(a) > 20_000
    segments = diff_segments(a, b)
    assert ops(segments)[1:3] == [("delete", "word45"), ("insert", "CHANGED")]
    assert [s.op for s in segments] == ["equal", "delete", "insert", "equal"]
    assert_well_formed(segments, a, b)


def test_edits_at_both_ends_of_a_long_text_stay_at_the_ends() -> None:
    middle = " ".join(f"w{i}" for i in range(3_000))
    a, b = f"A {middle} Z", f"B {middle} Y"
    assert ops(diff_segments(a, b)) == [
        ("delete", "A"),
        ("insert", "B"),
        ("equal", f" {middle} "),
        ("delete", "Z"),
        ("insert", "Y"),
    ]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("x" + "a " * 999, "y" + " b" * 999),  # few distinct tokens (quadratic for difflib)
        (
            "the " * 1_000,
            " ".join(f"the quick brown fox number {i} jumps over the lazy dog." for i in range(120)),
        ),
    ],
)
def test_degenerate_texts_are_aligned_exactly(a: str, b: str) -> None:
    segments = diff_segments(a, b)
    assert_well_formed(segments, a, b)
    shared = sum(len(tokenize(s.text)) for s in segments if s.op == "equal")
    assert shared == lcs_length(tokenize(a), tokenize(b))


token_lists = st.lists(st.sampled_from(["a", "b", "c", " ", "的"]), max_size=40)


@given(token_lists, token_lists)
@settings(max_examples=300, deadline=None)
def test_the_equal_segments_are_a_longest_common_subsequence(a: list[str], b: list[str]) -> None:
    segments = diff_segments("".join(a), "".join(b))
    shared = sum(len(tokenize(s.text)) for s in segments if s.op == "equal")
    assert shared == lcs_length(tokenize("".join(a)), tokenize("".join(b)))


# --- invariants on arbitrary text ------------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_characters="\x00"), max_size=60)
# Small pieces of many scripts, so that the two texts share tokens and the diff has something to align.
pieces = st.sampled_from(
    [" ", "  ", "\n", ".", ",", "!", "the", "cat", "模", "型", "你", "好", "：", "タ", "ー", "안", "녕", "мир",
     "e\u0301", "\u0301", "👍", "🏽", "\u200d", "👩", "🇫", "🇷", "\ufe0f", "x²", "<", ">", "&", "\t", "1"]
)  # fmt: skip
mixed_text = st.lists(pieces, max_size=30).map("".join)
texts = st.one_of(any_text, mixed_text)


@given(texts, texts)
@settings(max_examples=500, deadline=None)
def test_invariants(a: str, b: str) -> None:
    segments = diff_segments(a, b)
    assert_well_formed(segments, a, b)
    if a == b:
        assert segments == ([Segment("equal", a)] if a else [])
    else:
        assert any(s.op != "equal" for s in segments)


@given(texts, texts, texts)
@settings(max_examples=300, deadline=None)
def test_invariants_on_an_edit(prefix: str, middle: str, suffix: str) -> None:
    a = prefix + suffix
    b = prefix + middle + suffix
    segments = diff_segments(a, b)
    assert_well_formed(segments, a, b)
    assert_well_formed(diff_segments(b, a), b, a)


@given(texts)
@settings(max_examples=500, deadline=None)
def test_tokens_join_back_to_the_text(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert all(tokens)
