"""diff_segments: token-level highlights (one token per CJK character), exact reconstruction, bounded work."""

from __future__ import annotations

import dataclasses
from difflib import SequenceMatcher

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.review import diff as diff_module
from app.review.diff import MAX_TOKEN_PRODUCT, Segment, diff_segments, segments_as_dicts, tokenize


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


# --- bounded work -----------------------------------------------------------------------------------------------


def unrelated_texts(tokens_each: int) -> tuple[str, str]:
    """Two texts of about tokens_each tokens that share no token at all."""
    a = " ".join(f"a{i}" for i in range(tokens_each // 2))
    b = "\n".join(f"b{i}" for i in range(tokens_each // 2))
    return a, b


def test_over_the_bound_falls_back_to_one_deletion_and_one_insertion() -> None:
    a, b = "one two three", "three two one"
    assert ops(diff_segments(a, b)) == [
        ("delete", "one"),
        ("insert", "three"),
        ("equal", " two "),
        ("delete", "three"),
        ("insert", "one"),
    ]
    # 5 tokens against 5: 25 pairs.
    assert diff_segments(a, b, max_product=24) == [Segment("delete", a), Segment("insert", b)]
    assert diff_segments(a, b, max_product=25) == diff_segments(a, b)


def test_the_default_bound() -> None:
    a, b = unrelated_texts(2_100)
    assert len(tokenize(a)) * len(tokenize(b)) > MAX_TOKEN_PRODUCT
    # Shared spaces would be aligned if the texts were diffed; above the bound they are not.
    b = b.replace("\n", " ")
    assert diff_segments(a, b) == [Segment("delete", a), Segment("insert", b)]


def test_a_small_edit_in_a_long_text_stays_small() -> None:
    # About 20,000 characters and 6,000 tokens: far over the bound, but the common ends are set aside first.
    words = [f"word{i % 97}" for i in range(3_000)]
    a = " ".join(words)
    words[1_500] = "CHANGED"
    b = " ".join(words)
    assert len(a) > 20_000
    segments = diff_segments(a, b)
    assert ops(segments)[1:3] == [("delete", "word45"), ("insert", "CHANGED")]
    assert [s.op for s in segments] == ["equal", "delete", "insert", "equal"]
    assert_well_formed(segments, a, b)


def test_edits_at_both_ends_of_a_long_text_fall_back_between_them() -> None:
    middle = " ".join(f"w{i}" for i in range(3_000))
    a, b = f"A {middle} Z", f"B {middle} Y"
    assert diff_segments(a, b) == [Segment("delete", a), Segment("insert", b)]


def test_few_distinct_tokens_do_not_blow_up() -> None:
    # Every other token is a space: unbudgeted, SequenceMatcher needs tens of seconds on this pair.
    a = "x" + "a " * 999
    b = "y" + " b" * 999
    assert len(tokenize(a)) * len(tokenize(b)) <= MAX_TOKEN_PRODUCT
    segments = diff_segments(a, b)
    assert_well_formed(segments, a, b)


def test_a_looping_model_output_against_prose() -> None:
    a = "the " * 1_000
    b = " ".join(f"the quick brown fox number {i} jumps over the lazy dog." for i in range(120))
    segments = diff_segments(a, b)
    assert_well_formed(segments, a, b)
    assert any(s.op == "equal" for s in segments)


def test_no_work_budget_leaves_the_middle_unaligned() -> None:
    a, b = "keep one two three keep", "keep three two one keep"
    assert ops(diff_segments(a, b, max_work=0)) == [
        ("equal", "keep "),
        ("delete", "one two three"),
        ("insert", "three two one"),
        ("equal", " keep"),
    ]


def merged(blocks: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Adjacent blocks joined, as SequenceMatcher.get_matching_blocks reports them."""
    out: list[tuple[int, int, int]] = []
    for i, j, k in blocks:
        if out and out[-1][0] + out[-1][2] == i and out[-1][1] + out[-1][2] == j:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + k)
        else:
            out.append((i, j, k))
    return out


token_lists = st.lists(st.sampled_from(["a", "b", "c", " ", "的"]), max_size=40)


@given(token_lists, token_lists)
@settings(max_examples=300, deadline=None)
def test_within_budget_the_alignment_is_sequence_matchers(a: list[str], b: list[str]) -> None:
    expected = SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()[:-1]
    assert merged(diff_module._matching_blocks(a, b, budget=10**9)) == [tuple(m) for m in expected]


@given(token_lists, token_lists, st.integers(min_value=0, max_value=400))
@settings(max_examples=300, deadline=None)
def test_under_any_budget_the_blocks_are_real_matches_in_order(
    a: list[str], b: list[str], budget: int
) -> None:
    blocks = diff_module._matching_blocks(a, b, budget)
    i = j = 0
    for bi, bj, size in blocks:
        assert size > 0 and bi >= i and bj >= j
        assert a[bi : bi + size] == b[bj : bj + size]
        i, j = bi + size, bj + size


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


@given(texts, texts, st.integers(min_value=0, max_value=50), st.integers(min_value=0, max_value=400))
@settings(max_examples=300, deadline=None)
def test_invariants_hold_under_any_bound(a: str, b: str, max_product: int, max_work: int) -> None:
    assert_well_formed(diff_segments(a, b, max_product=max_product, max_work=max_work), a, b)


@given(texts)
@settings(max_examples=500, deadline=None)
def test_tokens_join_back_to_the_text(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert all(tokens)
