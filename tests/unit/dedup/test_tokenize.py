"""The ROUGE tokenizer: rouge-score's on Latin text, one token per Chinese, Japanese or Korean character."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from app.dedup.tokenize import cjk_ratio, has_cjk, tokenize

ROUGE_TOKENIZER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)._tokenizer

# Any character outside the CJK blocks the tokenizer splits: letters with diacritics, symbols, digits, emoji,
# Cyrillic, Greek, punctuation, whitespace of every kind.
non_cjk_text = st.text(
    alphabet=st.characters(codec="utf-8").filter(lambda c: not has_cjk(c) and not has_cjk(c.lower())),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(non_cjk_text)
def test_matches_rouge_score_on_text_without_cjk(text: str) -> None:
    assert tokenize(text) == ROUGE_TOKENIZER.tokenize(text)


def test_matches_rouge_score_on_every_non_cjk_character() -> None:
    # Exhaustive over all of Unicode: each character between two letters, all in one text for speed.
    chars = (chr(p) for p in range(0x110000) if not 0xD800 <= p <= 0xDFFF)
    text = " ".join(f"a{c}B" for c in chars if not has_cjk(c) and not has_cjk(c.lower()))
    assert tokenize(text) == ROUGE_TOKENIZER.tokenize(text)


def test_latin_examples() -> None:
    assert tokenize("Write a haiku about Autumn, in 3 lines!") == [
        "write", "a", "haiku", "about", "autumn", "in", "3", "lines",
    ]  # fmt: skip
    assert tokenize("e-mail: x@y.com") == ["e", "mail", "x", "y", "com"]
    assert tokenize("naïve café") == ["na", "ve", "caf"]  # rouge-score drops non-ASCII letters too


def test_cjk_characters_are_single_tokens() -> None:
    chinese = "翻译成英文：你好"  # noqa: RUF001 (a Chinese colon separates tokens like any punctuation)
    assert tokenize(chinese) == ["翻", "译", "成", "英", "文", "你", "好"]
    assert tokenize("ひらがなカタカナ") == list("ひらがなカタカナ")
    assert tokenize("한국어 문장") == ["한", "국", "어", "문", "장"]
    assert tokenize("Translate 你好 into English") == ["translate", "你", "好", "into", "english"]
    assert tokenize("GPT4模型") == ["gpt4", "模", "型"]


def test_empty_whitespace_emoji_and_punctuation_give_no_tokens() -> None:
    for text in ["", "   \n\t ", "🙂🎉👍🏽", "…!?¿", "\u200b\u00a0"]:
        assert tokenize(text) == []
        assert not has_cjk(text)
        assert cjk_ratio(text) == 0.0


def test_cjk_helpers() -> None:
    assert has_cjk("hello 世界") and not has_cjk("hello world")
    assert cjk_ratio("hello 世界") == 2 / 3
    assert cjk_ratio("世界") == 1.0


def test_ten_thousand_words() -> None:
    text = " ".join(f"word{i}" for i in range(10_000))
    assert len(tokenize(text)) == 10_000
