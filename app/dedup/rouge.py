"""Exact ROUGE-L F1 (beta = 1) on token sequences.

The reference value is the one rouge-score's `rougeL` reports with stemming off: precision = LCS /
len(prediction), recall = LCS / len(target), F1 = 2 * precision * recall / (precision + recall), and 0 when
either side is empty. Only the integer LCS is expensive; once it is known, applying that very float formula
(same operations, same order) reproduces the reference bit for bit. The formula is symmetric in IEEE
arithmetic too: doubling is exact and `*` and `+` commute, so which side is called the "prediction" does not
matter.

The LCS itself comes from rapidfuzz's bit-parallel `LCSseq` on strings: each distinct token is first mapped to
one code point, which turns a token sequence into a short `str` and lets rapidfuzz compare whole machine words
at once.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from rapidfuzz.distance import LCSseq

__all__ = ["f1_from_lcs", "f1_from_lcs_array", "lcs_length", "rouge_l_f1"]


def f1_from_lcs(lcs: int, len_a: int, len_b: int) -> float:
    """The reference float formula, given the LCS length and both sequence lengths."""
    if len_a == 0 or len_b == 0:
        return 0.0
    precision = lcs / len_b
    recall = lcs / len_a
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def f1_from_lcs_array(lcs: np.ndarray, len_a: np.ndarray | int, len_b: np.ndarray | int) -> np.ndarray:
    """`f1_from_lcs` over arrays (broadcast), as float64 with the same IEEE operations in the same order.

    NumPy's float64 division, multiplication and addition round exactly as Python's float operators do, so
    each element equals the scalar formula bit for bit. Every length must be positive (empty sequences score 0
    and never reach this path).
    """
    lcs_f = np.asarray(lcs, dtype=np.float64)
    precision = lcs_f / np.asarray(len_b, dtype=np.float64)
    recall = lcs_f / np.asarray(len_a, dtype=np.float64)
    total = precision + recall
    # Where the LCS is 0 both terms are 0: divide by 1 instead of 0 and get the reference's 0.0.
    return 2 * precision * recall / np.where(total > 0, total, 1.0)


def _as_code_strings(a: Sequence[Hashable], b: Sequence[Hashable]) -> tuple[str, str]:
    """Map the distinct tokens of a and b to code points so the pair can be compared as two strings.

    Mapping through an exact dictionary (not a hash) means two different tokens can never compare equal.
    """
    codes: dict[Hashable, str] = {}

    def encode(seq: Sequence[Hashable]) -> str:
        out = []
        for token in seq:
            ch = codes.get(token)
            if ch is None:
                n = len(codes)
                # Skip the surrogate block so every code is an ordinary character.
                ch = chr(n if n < 0xD800 else n + 0x800)
                codes[token] = ch
            out.append(ch)
        return "".join(out)

    return encode(a), encode(b)


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence of two token sequences."""
    if not a or not b:
        return 0
    sa, sb = _as_code_strings(a, b)
    return int(LCSseq.similarity(sa, sb))


def rouge_l_f1(a_tokens: Sequence[Hashable], b_tokens: Sequence[Hashable]) -> float:
    """ROUGE-L F1 of two token sequences, equal to rouge-score's `rougeL` fmeasure on the same tokens."""
    return f1_from_lcs(lcs_length(a_tokens, b_tokens), len(a_tokens), len(b_tokens))
