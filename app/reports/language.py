"""An item's language by the scripts its instruction is written in: a simple rule, set when an item is stored, that
review filters on. [8/8] refines it (real language identification); the column and the filter stay.

- zh: Han characters (and no kana or hangul);  ja: any kana;  ko: any hangul;
- latin: Latin letters only;  mixed: CJK characters and Latin words, each at least a fifth of them;
- other: no letters of these scripts (digits, symbols, Cyrillic, Arabic, ...).
"""

from __future__ import annotations

import re
from typing import Literal, get_args

Language = Literal["zh", "ja", "ko", "latin", "mixed", "other"]
LANGUAGES: tuple[Language, ...] = get_args(Language)

_KANA = re.compile("[\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff\uffa0-\uffdc]")
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
# Latin words (accented letters included: Latin-1 Supplement and Latin Extended-A/B, minus × and ÷). Words, not
# letters, are weighed against CJK characters: one Chinese character carries about as much as one English word.
_LATIN_WORD = re.compile("[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f]+")
MIXED_SHARE = 0.2


def script_language(instruction: str, *fallbacks: str) -> Language:
    """The language label of an item: its instruction's, or, when that has no letters at all, its other texts'.

    The instruction decides because it is the task: "翻译成英文：你好" with the output "Hello" is a Chinese task.
    """
    has_letters = any(ch.isalpha() for ch in instruction)
    return _label(instruction if has_letters or not fallbacks else "\n".join(fallbacks))


def _label(text: str) -> Language:
    kana, hangul, han = len(_KANA.findall(text)), len(_HANGUL.findall(text)), len(_HAN.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    cjk = kana + hangul + han
    if cjk and latin and min(cjk, latin) >= MIXED_SHARE * (cjk + latin):
        return "mixed"
    if cjk > latin:
        if hangul and hangul >= kana:
            return "ko"
        return "ja" if kana else "zh"
    return "latin" if latin else "other"
