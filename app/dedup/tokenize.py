"""The word tokenizer behind ROUGE-L and the length filters.

On Latin text it is rouge-score's tokenizer with stemming off: lowercase, then every run of [a-z0-9] is a token
and everything else separates tokens. rouge-score drops every other character, so Chinese, Japanese and Korean
text becomes empty and any ROUGE-L filter silently passes it. Here each CJK ideograph, kana and hangul character
is a token of its own (these scripts do not mark word boundaries with spaces), so their near-duplicates are found.
"""

from __future__ import annotations

import re

# Scripts written without spaces between words: one character, one token.
_CJK_CLASS = (
    "\u1100-\u11ff"  # Hangul Jamo
    "\u3005\u3007"  # ideographic iteration mark, ideographic zero
    "\u3040-\u309f"  # Hiragana
    "\u30a0-\u30ff"  # Katakana
    "\u3100-\u312f"  # Bopomofo
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u31a0-\u31bf"  # Bopomofo extended
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK Unified Ideographs extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\ua960-\ua97f"  # Hangul Jamo extended A
    "\uac00-\ud7af"  # Hangul syllables
    "\ud7b0-\ud7ff"  # Hangul Jamo extended B
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # halfwidth Katakana
    "\uffa0-\uffdc"  # halfwidth Hangul
    "\U00020000-\U0003134f"  # CJK extensions B-G
)
_TOKEN_RE = re.compile(rf"[a-z0-9]+|[{_CJK_CLASS}]")
_CJK_RE = re.compile(rf"[{_CJK_CLASS}]")


def tokenize(text: str) -> list[str]:
    """Split text into ROUGE tokens (rouge-score's on Latin text, one token per CJK character)."""
    return _TOKEN_RE.findall(text.lower())


def has_cjk(text: str) -> bool:
    """True when the text holds at least one Chinese, Japanese or Korean character."""
    return _CJK_RE.search(text) is not None


def cjk_ratio(text: str) -> float:
    """Share of CJK characters among the tokens of a text (0.0 for a text with no tokens)."""
    return cjk_share(tokenize(text))


def cjk_share(tokens: list[str]) -> float:
    """cjk_ratio of already tokenized text: a token is ASCII letters and digits, or one CJK character."""
    if not tokens:
        return 0.0
    return sum(1 for t in tokens if not t.isascii()) / len(tokens)
