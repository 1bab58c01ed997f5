"""The highlighted difference between two texts, for the reviewer UI (a generated item against its edit).

A character diff of prose is noisy and a whitespace-split word diff is useless on Chinese, Japanese and Korean,
which put no spaces between words. So the texts are cut into tokens first: a run of letters and digits in any
other script is one token, a run of whitespace is one token, each other character (punctuation, symbols) is one
token, and each CJK ideograph, kana or hangul character is a token of its own; "翻译成英文" against "翻译成法文"
highlights just 英 → 法. Combining marks, variation selectors, emoji modifiers and zero-width-joined sequences
stay with the character they modify, so a highlight does not cut an accented letter, a flag or a family emoji
in two.

Model output is untrusted. This module only splits strings: it never escapes, sanitises or renders anything,
and the segments hold the original text verbatim. The UI must render them as text (textContent), never as HTML.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from rapidfuzz.distance import Indel

__all__ = [
    "Op",
    "Segment",
    "diff_segments",
    "segments_as_dicts",
    "tokenize",
]

Op = Literal["equal", "delete", "insert"]


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of text that both texts share ("equal"), only the first has ("delete") or only the second has
    ("insert")."""

    op: Op
    text: str


# Scripts written without spaces between words, as inclusive code point ranges in ascending order.
_CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x3005, 0x3005),  # ideographic iteration mark 々
    (0x3007, 0x3007),  # ideographic number zero 〇
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3038, 0x303B),  # more Hangzhou numerals, vertical iteration mark
    (0x3041, 0x309F),  # Hiragana
    (0x30A0, 0x30FF),  # Katakana
    (0x3105, 0x312F),  # Bopomofo
    (0x3131, 0x318E),  # Hangul compatibility Jamo
    (0x31A0, 0x31BF),  # Bopomofo extended
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK Unified Ideographs extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xA960, 0xA97F),  # Hangul Jamo extended A
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xD7B0, 0xD7FF),  # Hangul Jamo extended B
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # halfwidth Katakana
    (0xFFA0, 0xFFDC),  # halfwidth Hangul
    (0x1AFF0, 0x1B16F),  # Kana extended B, Kana supplement, Kana extended A, small Kana extension
    (0x20000, 0x3FFFF),  # CJK Unified Ideographs extensions B onwards, compatibility supplement
)
_CJK_STARTS = tuple(start for start, _ in _CJK_RANGES)
_CJK_ENDS = tuple(end for _, end in _CJK_RANGES)

_ZWJ = "\u200d"
_REGIONAL_INDICATORS = range(0x1F1E6, 0x1F1FF + 1)
_EMOJI_MODIFIERS = range(0x1F3FB, 0x1F3FF + 1)  # skin tones
_TAGS = range(0xE0020, 0xE007F + 1)  # the tail of subdivision flags such as England's

_SPACE, _WORD, _SINGLE = 0, 1, 2


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    i = bisect_right(_CJK_STARTS, cp) - 1
    return i >= 0 and cp <= _CJK_ENDS[i]


def _kind(ch: str) -> int:
    if ch.isspace():
        return _SPACE
    if _is_cjk(ch):
        return _SINGLE
    if unicodedata.category(ch)[0] in "LN":
        return _WORD
    return _SINGLE


def _extends(ch: str) -> bool:
    """Whether ch modifies the character before it rather than standing on its own."""
    cp = ord(ch)
    return unicodedata.category(ch)[0] == "M" or cp in _EMOJI_MODIFIERS or cp in _TAGS


def _cluster_end(text: str, i: int) -> int:
    """End of the user-perceived character that starts at text[i] (an approximation of a grapheme cluster)."""
    n = len(text)
    j = i + 1
    # A flag is a pair of regional indicators; a third one starts the next flag.
    if ord(text[i]) in _REGIONAL_INDICATORS and j < n and ord(text[j]) in _REGIONAL_INDICATORS:
        j += 1
    while j < n:
        ch = text[j]
        if _extends(ch):
            j += 1
        elif ch == _ZWJ:
            j += 1
            # The joiner glues the next character on (family emoji, Indic conjuncts) unless that is a space.
            if j < n and not text[j].isspace():
                j += 1
        else:
            break
    return j


def tokenize(text: str) -> list[str]:
    """Cut text into diff tokens; joining them gives back the text exactly."""
    tokens: list[str] = []
    n = len(text)
    i = 0
    while i < n:
        start = i
        kind = _kind(text[i])
        if kind == _SPACE:
            # Whitespace takes no marks: a stray mark after a space becomes a token of its own.
            i += 1
            while i < n and text[i].isspace():
                i += 1
        else:
            i = _cluster_end(text, i)
            if kind == _WORD:
                while i < n and _kind(text[i]) == _WORD:
                    i = _cluster_end(text, i)
        tokens.append(text[start:i])
    return tokens


def _append(segments: list[Segment], op: Op, text: str) -> None:
    if not text:
        return
    if segments and segments[-1].op == op:
        segments[-1] = Segment(op, segments[-1].text + text)
    else:
        segments.append(Segment(op, text))


def diff_segments(a: str, b: str) -> list[Segment]:
    """The segments that turn a into b: equal + delete segments join to a, equal + insert segments to b.

    No segment is empty and no two neighbours share an op; a replacement is its deletion, then its insertion.
    The alignment is a longest common subsequence of tokens (rapidfuzz's bit-parallel Indel, in C): exact, and
    a few microseconds for a typical instruction, milliseconds for 20,000 characters, whatever the texts hold.
    Results are remembered (a reviewer's held items are presented again at every claim).
    """
    return list(_diff(a, b))


@lru_cache(maxsize=4096)
def _diff(a: str, b: str) -> tuple[Segment, ...]:
    if a == b:
        return (Segment("equal", a),) if a else ()
    ta, tb = tokenize(a), tokenize(b)
    segments: list[Segment] = []
    deleted: list[str] = []
    inserted: list[str] = []

    def changes() -> None:
        _append(segments, "delete", "".join(deleted))
        _append(segments, "insert", "".join(inserted))
        deleted.clear()
        inserted.clear()

    for op in Indel.opcodes(ta, tb):
        if op.tag == "equal":
            changes()
            _append(segments, "equal", "".join(ta[op.src_start : op.src_end]))
        else:
            deleted.extend(ta[op.src_start : op.src_end])
            inserted.extend(tb[op.dest_start : op.dest_end])
    changes()
    return tuple(segments)


def segments_as_dicts(segments: Iterable[Segment]) -> list[dict[str, str]]:
    """Segments as JSON-ready objects: [{"op": "delete", "text": "..."}, ...]."""
    return [{"op": s.op, "text": s.text} for s in segments]
