from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.core.text import REPLACEMENT, clip, storable


def test_nul_is_removed_and_lone_surrogates_replaced() -> None:
    assert storable("a\x00b") == "ab"
    assert storable("x\ud800y\udfff") == f"x{REPLACEMENT}y{REPLACEMENT}"
    assert storable("翻译成英文：你好 😀") == "翻译成英文：你好 😀"


@given(st.text())
def test_storable_text_always_encodes_as_utf8_without_nul(text: str) -> None:
    clean = storable(text)
    assert "\x00" not in clean
    clean.encode("utf-8")  # lone surrogates would raise here
    assert storable(clean) == clean


def test_clip() -> None:
    assert clip("abcdef", 3) == ("abc", True)
    assert clip("abc", 3) == ("abc", False)
