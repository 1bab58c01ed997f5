"""ROUGE-L F1: bit-for-bit equal to rouge-score, on random token sequences and on real instructions."""

from __future__ import annotations

import gzip
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from app.dedup.rouge import f1_from_lcs, f1_from_lcs_array, lcs_length, rouge_l_f1
from app.dedup.tokenize import has_cjk, tokenize

ROUGE_TOKENIZER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)._tokenizer

# Small alphabets make long common subsequences (and ties) likely; Unicode tokens check the code mapping.
tokens = st.sampled_from(["a", "b", "c", "d", "the", "of", "翻", "译", "🙂", "x" * 30])
token_lists = st.lists(tokens, max_size=40)


def dp_lcs(a: list[str], b: list[str]) -> int:
    """The textbook O(m*n) dynamic programme, as the reference for lcs_length."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


@settings(max_examples=400, deadline=None)
@given(token_lists, token_lists)
def test_lcs_equals_plain_dynamic_programming(a: list[str], b: list[str]) -> None:
    assert lcs_length(a, b) == dp_lcs(a, b)


@settings(max_examples=400, deadline=None)
@given(token_lists, token_lists)
def test_f1_is_rouge_score_bit_for_bit_and_symmetric(a: list[str], b: list[str]) -> None:
    expected = rouge_scorer._score_lcs(a, b).fmeasure
    assert rouge_l_f1(a, b) == expected  # exact float equality, not approx
    assert rouge_l_f1(b, a) == expected
    assert rouge_scorer._score_lcs(b, a).fmeasure == expected
    assert 0.0 <= expected <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.lists(tokens, min_size=1, max_size=40))
def test_identical_non_empty_sequences_score_one(a: list[str]) -> None:
    assert rouge_l_f1(a, list(a)) == 1.0


def test_empty_sequences_score_zero_like_rouge_score() -> None:
    # rapidfuzz would call two empty sequences identical (1.0); rouge-score says 0.
    assert rouge_l_f1([], []) == 0.0 == rouge_scorer._score_lcs([], []).fmeasure
    assert rouge_l_f1(["a"], []) == 0.0 and rouge_l_f1([], ["a"]) == 0.0
    assert lcs_length([], ["a"]) == 0


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000), st.data())
def test_vectorised_formula_equals_scalar_formula(m: int, n: int, data: st.DataObject) -> None:
    lcs = data.draw(st.integers(0, min(m, n)))
    vector = f1_from_lcs_array(np.array([lcs]), m, np.array([n]))
    assert vector[0] == f1_from_lcs(lcs, m, n)


def test_lcs_of_distinct_tokens_never_confuses_them() -> None:
    # More distinct tokens than fit below the surrogate block: each must still map to its own code.
    a = [f"w{i}" for i in range(60_000)]
    b = [f"v{i}" for i in range(60_000)]
    assert lcs_length(a, b) == 0
    assert lcs_length(a, a[::2]) == 30_000


def test_very_long_texts_are_fast() -> None:
    words = [f"word{i % 997}" for i in range(10_000)]
    other = words[::-1]
    started = time.perf_counter()
    score = rouge_l_f1(words, other)
    assert 0.0 < score < 1.0
    assert rouge_l_f1(words, words) == 1.0
    assert time.perf_counter() - started < 2.0


def test_chinese_scores_high_where_rouge_score_sees_nothing() -> None:
    a, b = "翻译成英文：你好", "请翻译成英文：你好吗"  # noqa: RUF001 (Chinese colons)
    assert rouge_l_f1(tokenize(a), tokenize(b)) == pytest.approx(14 / 16)  # LCS 7 of 7 and 9 characters
    assert ROUGE_TOKENIZER.tokenize(a) == [] and ROUGE_TOKENIZER.tokenize(b) == []
    assert rouge_scorer._score_lcs(ROUGE_TOKENIZER.tokenize(a), ROUGE_TOKENIZER.tokenize(b)).fmeasure == 0.0


# --- real instructions ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_texts(shared_data: Path) -> list[str]:
    with gzip.open(shared_data / "bench_instructions.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line)["instruction"] for line in handle]


def _real_pairs(texts: list[str], near: int, consecutive: int, unrelated: int) -> list[tuple[int, int]]:
    """Near-duplicate pairs (F1 above 0.5 among texts up to 4 lines apart: T0 templates put similar texts
    close together), neighbours in file order, and random pairs. English texts only, where rouge-score's
    tokenizer and ours must agree.
    """
    rng = random.Random(20261124)
    english = [i for i, t in enumerate(texts) if not has_cjk(t)]
    near_pairs: list[tuple[int, int]] = []
    for start in rng.sample(range(len(english) - 4), 6 * near):
        i, j = english[start], english[start + rng.randint(1, 4)]
        if rouge_l_f1(tokenize(texts[i]), tokenize(texts[j])) > 0.5:
            near_pairs.append((i, j))
            if len(near_pairs) == near:
                break
    assert len(near_pairs) == near, "the bench file no longer holds enough near-duplicate pairs"
    starts = rng.sample(range(len(english) - 1), consecutive)
    pairs = near_pairs + [(english[s], english[s + 1]) for s in starts]
    return pairs + [(rng.choice(english), rng.choice(english)) for _ in range(unrelated)]


def _assert_equal_to_rouge_score(texts: list[str], pairs: list[tuple[int, int]]) -> int:
    above_half = 0
    for i, j in pairs:
        ref_a, ref_b = ROUGE_TOKENIZER.tokenize(texts[i]), ROUGE_TOKENIZER.tokenize(texts[j])
        ours_a, ours_b = tokenize(texts[i]), tokenize(texts[j])
        assert (ours_a, ours_b) == (ref_a, ref_b)
        expected = rouge_scorer._score_lcs(ref_a, ref_b).fmeasure
        assert rouge_l_f1(ours_a, ours_b) == expected, (i, j)
        above_half += expected > 0.5
    return above_half


def test_equal_to_rouge_score_on_1000_real_pairs(bench_texts: list[str]) -> None:
    pairs = _real_pairs(bench_texts, near=400, consecutive=300, unrelated=300)
    assert _assert_equal_to_rouge_score(bench_texts, pairs) >= 400


@pytest.mark.slow
def test_equal_to_rouge_score_on_5000_real_pairs(bench_texts: list[str]) -> None:
    pairs = _real_pairs(bench_texts, near=2000, consecutive=1500, unrelated=1500)
    assert len(pairs) == 5000
    assert _assert_equal_to_rouge_score(bench_texts, pairs) >= 2000  # the near pairs, at least
