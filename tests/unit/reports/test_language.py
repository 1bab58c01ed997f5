"""The script rule that labels an item's language: the instruction decides, by the scripts its letters use."""

from __future__ import annotations

import pytest

from app.reports.language import LANGUAGES, script_language


@pytest.mark.parametrize(
    ("instruction", "others", "expected"),
    [
        ("翻译成英文：你好", ("Hello",), "zh"),  # a Chinese task, whatever language its output is in
        ("写一首关于冬天大海的短诗。", (), "zh"),
        ("次の文を英語に翻訳してください。", (), "ja"),  # kanji and kana: Japanese
        ("カタカナだけ", (), "ja"),
        ("다음 문장을 영어로 번역하세요.", (), "ko"),
        ("Write a haiku about the sea.", ("海",), "latin"),
        ("Écris un poème sur la mer.", (), "latin"),
        ("Explain 机器学习 in simple terms please", (), "mixed"),
        ("Translate 你好世界，今天天气很好 into English", (), "mixed"),
        (
            "Translate 你 into English for a beginner in this class",
            (),
            "latin",
        ),  # one character in many words
        ("Напиши стихотворение о море.", (), "other"),  # letters, but none of these scripts
        ("123 + 456 = ?", ("579",), "other"),  # no letters anywhere
        ("123 + 456 = ?", ("The sum is 579",), "latin"),  # no letters: the other texts decide
        ("", (), "other"),
    ],
)
def test_labels(instruction: str, others: tuple[str, ...], expected: str) -> None:
    assert script_language(instruction, *others) == expected
    assert expected in LANGUAGES
