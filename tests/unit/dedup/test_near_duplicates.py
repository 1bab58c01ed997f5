"""NearDuplicateIndex and its pruned ROUGE-L core: pruning changes no result, greedy equals rouge-score."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz import fuzz, process
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer

from app.dedup import FUZZY_SCORERS, DuplicateCheck, Embedder, NearDuplicateIndex
from app.dedup import index as index_module
from app.dedup import rouge_index as rouge_index_module
from app.dedup.fuzzy import FuzzyStore
from app.dedup.normalize import normalize_text
from app.dedup.rouge import f1_from_lcs, rouge_l_f1
from app.dedup.rouge_index import RougeLIndex
from app.dedup.tokenize import tokenize

ROUGE_TOKENIZER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)._tokenizer

# A tiny vocabulary makes overlaps, near-duplicates and exact ties common.
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
token_lists = st.lists(st.sampled_from(WORDS), max_size=14)
corpora = st.lists(token_lists, max_size=30)
floors = st.sampled_from([0.0, 0.2, 0.5, 0.7, 0.9, 1.0])


def brute_best(
    entries: Sequence[Sequence[str]], query: Sequence[str], floor: float
) -> tuple[int | None, float]:
    """Score everything, keep the first maximum, apply the floor: what RougeLIndex.best must return."""
    best_id, best_score = None, 0.0
    for eid, entry in enumerate(entries):
        score = rouge_l_f1(query, entry)
        if score > best_score:
            best_id, best_score = eid, score
    if best_id is None or best_score < floor:
        return None, 0.0
    return best_id, best_score


@settings(max_examples=300, deadline=None)
@given(corpora, st.lists(token_lists, min_size=1, max_size=8), floors, st.booleans(), st.booleans())
def test_pruned_index_equals_brute_force(
    entries: list[list[str]], queries: list[list[str]], floor: float, small_rebuilds: bool, prime: bool
) -> None:
    index = RougeLIndex(floor, first_rebuild=3 if small_rebuilds else 512, rebuild_growth=1.5)
    if prime:  # a primed order must change the speed only
        index.prime([index.encode(q, grow=True) for q in queries])
    for entry in entries:
        index.add(entry)
    for query in queries:
        assert index.best(query) == brute_best(entries, query, floor)
    block = index.search_block([index.encode(q, grow=False) for q in queries])
    expected = [brute_best(entries, q, floor) for q in queries]
    assert [b if b is not None else (None, 0.0) for b in block.index_best] == expected


@settings(max_examples=60, deadline=None)
@given(corpora, st.lists(token_lists, min_size=1, max_size=5), floors)
def test_int_code_fallback_equals_brute_force(
    entries: list[list[str]], queries: list[list[str]], floor: float
) -> None:
    # Past the end of Unicode, codes become ints and sequences become int lists: results must not change.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rouge_index_module, "_MAX_CODE_POINT", 4)
        index = RougeLIndex(floor, first_rebuild=4)
        index.prime([index.encode(q, grow=True) for q in queries])
        for entry in entries:
            index.add(entry)
        for query in queries:
            assert index.best(query) == brute_best(entries, query, floor)


def brute_greedy(
    texts: Sequence[str], threshold: float, floor: float
) -> list[tuple[bool, int | None, float | None]]:
    """Alpaca's loop with rouge-score itself: (kept, nearest kept index, its F1) per text."""
    kept: list[tuple[int, list[str]]] = []
    out = []
    for i, text in enumerate(texts):
        tokens = ROUGE_TOKENIZER.tokenize(text)
        best_j, best = None, 0.0
        for j, other in kept:
            score = rouge_scorer._score_lcs(tokens, other).fmeasure
            if score > best:
                best_j, best = j, score
        duplicate = best > threshold
        if best_j is None or best < floor:
            out.append((not duplicate, None, None))
        else:
            out.append((not duplicate, best_j, best))
        if not duplicate:
            kept.append((i, tokens))
    return out


def as_triples(checks: list[DuplicateCheck]) -> list[tuple[bool, int | None, float | None]]:
    return [(not c.is_duplicate, c.nearest_key, c.nearest_score) for c in checks]  # type: ignore[misc]


class BagOfWordsEmbedder:
    """Deterministic fake: hashed bag of words, L2-normalised. Word order does not matter to it."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        rows = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                rows[i, hashlib.blake2b(word.encode(), digest_size=2).digest()[0] % 64] += 1.0
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


texts = st.lists(st.lists(st.sampled_from([*WORDS, "Cat!", "MAT,"]), max_size=10).map(" ".join), max_size=40)


@settings(max_examples=150, deadline=None)
@given(texts, st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.9, 1.0]), st.sampled_from([0.0, 0.4, 0.7, 1.0]))
def test_greedy_decisions_equal_rouge_score_greedy(batch: list[str], threshold: float, floor: float) -> None:
    expected = brute_greedy(batch, threshold, min(floor, threshold))
    pairs = list(enumerate(batch))
    at_once = NearDuplicateIndex(rouge_threshold=threshold, neighbour_floor=floor, exact=False)
    assert as_triples(at_once.check_and_add_many(pairs)) == expected
    one_by_one = NearDuplicateIndex(rouge_threshold=threshold, neighbour_floor=floor, exact=False)
    assert as_triples([one_by_one.check_and_add(k, t) for k, t in pairs]) == expected
    assert len(at_once) == len(one_by_one) == sum(kept for kept, _, _ in expected)


@settings(max_examples=100, deadline=None)
@given(texts, st.sampled_from([0.3, 0.5, 0.7]), st.integers(1, 7), st.integers(1, 30))
def test_blocks_and_priming_do_not_change_greedy_results(
    batch: list[str], threshold: float, block_size: int, prime_min: int
) -> None:
    expected = brute_greedy(batch, threshold, 0.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(index_module, "BLOCK_SIZE", block_size)
        patch.setattr(index_module, "PRIME_MIN_TEXTS", prime_min)
        index = NearDuplicateIndex(rouge_threshold=threshold, neighbour_floor=0.0, exact=False)
        half = len(batch) // 2
        checks = index.check_and_add_many(list(enumerate(batch[:half])))
        checks += index.check_and_add_many([(half + i, t) for i, t in enumerate(batch[half:])])
    assert as_triples(checks) == expected


def brute_all_signals(batch: list[str], embedder: BagOfWordsEmbedder) -> list[str | None]:
    """Greedy with every signal, scoring every kept text: exact, ROUGE-L > 0.6, ratio >= 85, cosine >= .95."""
    kept: list[int] = []
    norms = [normalize_text(t) for t in batch]
    rows = embedder.encode(batch)
    signals: list[str | None] = []
    for i, text in enumerate(batch):
        signal = None
        if any(norms[j] == norms[i] for j in kept):
            signal = "exact"
        elif any(rouge_l_f1(tokenize(text), tokenize(batch[j])) > 0.6 for j in kept):
            signal = "rouge_l"
        elif norms[i] and any(norms[j] and fuzz.ratio(norms[i], norms[j]) >= 85 for j in kept):
            signal = "fuzzy"
        elif norms[i] and any(float(rows[i] @ rows[j]) >= 0.95 for j in kept):
            signal = "semantic"
        signals.append(signal)
        if signal is None:
            kept.append(i)
    return signals


sentences = st.lists(
    st.lists(
        st.sampled_from(["write", "a", "poem", "poems", "about", "the", "sea", "see", "Sea."]), max_size=7
    ).map(" ".join),
    max_size=25,
)


@settings(max_examples=100, deadline=None)
@given(sentences, st.integers(1, 9))
def test_every_signal_greedy_equals_brute_force(batch: list[str], block_size: int) -> None:
    embedder = BagOfWordsEmbedder()
    expected = brute_all_signals(batch, embedder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(index_module, "BLOCK_SIZE", block_size)
        index = NearDuplicateIndex(
            rouge_threshold=0.6, fuzzy_cutoff=85, semantic_threshold=0.95, embedder=embedder
        )
        checks = index.check_and_add_many(list(enumerate(batch)))
    assert [c.signal for c in checks] == expected


def test_greedy_on_real_instructions_equals_unpruned_search(shared_data: Path) -> None:
    """3,000 real instructions (a primed, blocked run) against an exhaustive scan of the kept ones."""
    with gzip.open(shared_data / "bench_instructions.jsonl.gz", "rt", encoding="utf-8") as handle:
        batch = [json.loads(line)["instruction"] for _, line in zip(range(3000), handle, strict=False)]
    index = NearDuplicateIndex(rouge_threshold=0.7, neighbour_floor=0.5, exact=False)
    checks = index.check_and_add_many(list(enumerate(batch)))

    codes: dict[str, str] = {}
    seqs = ["".join(codes.setdefault(t, chr(len(codes) + 1)) for t in tokenize(text)) for text in batch]
    kept: list[int] = []
    for i, seq in enumerate(seqs):
        expected_key, expected_score = None, None
        if kept and seq:
            lcs = process.cdist([seq], [seqs[j] for j in kept], scorer=LCSseq.similarity)[0]
            scores = [f1_from_lcs(int(lcs[k]), len(seq), len(seqs[j])) for k, j in enumerate(kept)]
            at = int(np.argmax(scores))
            if scores[at] >= 0.5:
                expected_key, expected_score = kept[at], scores[at]
        assert (checks[i].nearest_key, checks[i].nearest_score) == (expected_key, expected_score), i
        assert checks[i].is_duplicate == (expected_score is not None and expected_score > 0.7)
        if not checks[i].is_duplicate:
            kept.append(i)
    assert 300 < len(kept) < 2700  # real near-duplicates were found, and not everything was dropped


# --- signals and their order -------------------------------------------------------------------------


def test_fake_embedder_satisfies_the_protocol() -> None:
    assert isinstance(BagOfWordsEmbedder(), Embedder)


def test_signals_are_reported_in_order_exact_rouge_fuzzy_semantic() -> None:
    index = NearDuplicateIndex(
        rouge_threshold=0.7, fuzzy_cutoff=90, semantic_threshold=0.99, embedder=BagOfWordsEmbedder()
    )
    index.add("seed", "Summarize the following paragraph in two sentences")
    exact = index.query("  SUMMARIZE the following   paragraph in two sentences ")
    assert exact.signal == "exact" and exact.exact_key == "seed" and exact.nearest_score == 1.0
    rouge = index.query("Summarize the following paragraph in three sentences")
    assert (
        rouge.signal == "rouge_l"
        and rouge.nearest_key == "seed"
        and rouge.nearest_score == pytest.approx(6 / 7)
    )
    # Three typos: 3 of 7 tokens differ (F1 4/7), the characters hardly.
    fuzzy = index.query("Sumarize the folowing paragraf in two sentences")
    assert (
        fuzzy.nearest_score == pytest.approx(4 / 7) and fuzzy.signal == "fuzzy" and fuzzy.fuzzy_key == "seed"
    )
    assert fuzzy.fuzzy_score is not None and fuzzy.fuzzy_score >= 90
    # The same words in another order: ROUGE-L and fuzzy are low, a bag of words is identical.
    semantic = index.query("sentences two in paragraph following the Summarize")
    assert semantic.signal == "semantic" and semantic.semantic_key == "seed"
    assert semantic.semantic_score == pytest.approx(1.0, abs=1e-5)
    fresh = index.query("Write a poem about the sea")
    assert not fresh.is_duplicate and fresh.signal is None and fresh.nearest_key is None
    assert fresh.semantic_key == "seed" and fresh.semantic_score is not None and fresh.semantic_score < 0.99


def test_rouge_threshold_is_strict_and_floor_bounds_the_neighbour() -> None:
    index = NearDuplicateIndex(rouge_threshold=0.75, neighbour_floor=0.5)
    index.add(1, "a b c d")
    at_threshold = index.query("a b c x y z")  # LCS 3 of 4 and 6: F1 = 0.6
    assert not at_threshold.is_duplicate and at_threshold.nearest_key == 1
    assert at_threshold.nearest_score == pytest.approx(0.6)
    equal = NearDuplicateIndex(rouge_threshold=0.75)
    equal.add(1, "a b c d")
    check = equal.query("a b c x")  # F1 = 0.75 exactly: not above the threshold
    assert check.nearest_score == 0.75 and not check.is_duplicate
    below_floor = index.query("a x y z")  # F1 = 0.25
    assert below_floor.nearest_key is None and below_floor.nearest_score is None


def test_exact_signal_can_be_switched_off() -> None:
    index = NearDuplicateIndex(exact=False)
    index.add(0, "🙂🙂")
    check = index.query("🙂🙂")  # no ROUGE tokens: rouge-score gives 0, so only the exact signal could fire
    assert not check.is_duplicate and check.exact_key is None and check.nearest_key is None
    with_exact = NearDuplicateIndex()
    with_exact.add(0, "🙂🙂")
    assert with_exact.query("🙂🙂").signal == "exact"


def test_fuzzy_scorers_and_cutoff() -> None:
    with pytest.raises(ValueError, match="'no_such_scorer'"):
        NearDuplicateIndex(fuzzy_cutoff=80, fuzzy_scorer="no_such_scorer")
    for name in FUZZY_SCORERS:  # every scorer gives 100 to texts equal after normalization
        # rouge_threshold 1.0: ROUGE-L never fires, so the fuzzy signal is the one that decides (and is searched).
        index = NearDuplicateIndex(rouge_threshold=1.0, fuzzy_cutoff=100, fuzzy_scorer=name, exact=False)
        index.add(0, "List three prime numbers")
        check = index.query("LIST three \n prime numbers")
        assert (check.fuzzy_key, check.fuzzy_score) == (0, 100.0)
        assert index.query("list three prime numbers!").fuzzy_score in (None, 100.0)
    token_set = NearDuplicateIndex(
        rouge_threshold=1.0, fuzzy_cutoff=95, fuzzy_scorer="token_set_ratio", exact=False
    )
    token_set.add(0, "prime numbers list three")
    check = token_set.query("list three prime numbers")
    assert check.signal == "fuzzy" and check.fuzzy_score == 100.0
    with pytest.raises(ValueError):
        NearDuplicateIndex(fuzzy_cutoff=101)


def test_semantic_needs_an_embedder_and_checks_its_rows() -> None:
    with pytest.raises(ValueError, match="embedder"):
        NearDuplicateIndex(semantic_threshold=0.9)

    class Broken:
        def encode(self, texts: Sequence[str]) -> np.ndarray:
            return np.ones((len(texts) + 1, 8), dtype=np.float32)

    index = NearDuplicateIndex(semantic_threshold=0.9, embedder=Broken())
    with pytest.raises(ValueError, match="rows"):
        index.add(0, "text")


def test_greedy_batch_catches_duplicates_within_the_batch_for_every_signal() -> None:
    embedder = BagOfWordsEmbedder()
    index = NearDuplicateIndex(fuzzy_cutoff=90, semantic_threshold=0.999, embedder=embedder)
    batch = [
        ("a", "Write a story about a brave knight"),
        ("b", "write a STORY about a brave knight"),  # exact
        ("c", "Write a story about a brave knight and a dragon"),  # rouge_l
        ("d", "Wrte a story abot a brave knigt"),  # fuzzy: F1 4/7, ratio 95
        ("e", "knight brave a about story a Write"),  # semantic
        ("f", "Translate this sentence into French"),
    ]
    checks = index.check_and_add_many(batch)
    assert [c.signal for c in checks] == [None, "exact", "rouge_l", "fuzzy", "semantic", None]
    assert [c.nearest_key for c in checks[1:3]] == ["a", "a"]
    assert checks[3].fuzzy_key == "a" and checks[4].semantic_key == "a"
    assert len(index) == 2 and "a" in index and "f" in index and "b" not in index


def test_query_batch_compares_with_the_index_only_and_adds_nothing() -> None:
    index = NearDuplicateIndex()
    index.add("seed", "name three colours")
    checks = index.query_batch(["name three colours please", "a brand new task", "a brand new task"])
    assert checks[0].is_duplicate and checks[0].nearest_key == "seed"
    assert not checks[1].is_duplicate and not checks[2].is_duplicate  # not compared with each other
    assert len(index) == 1


def test_keys_must_be_new_and_not_none() -> None:
    index = NearDuplicateIndex()
    index.add(("seed", 1), "one")
    with pytest.raises(ValueError, match="already"):
        index.add(("seed", 1), "two")
    with pytest.raises(ValueError, match="already"):
        index.check_and_add_many([(("item", 1), "x y"), (("item", 1), "z w")])
    with pytest.raises(ValueError, match="None"):
        index.add(None, "three")
    with pytest.raises(TypeError):
        index.query(b"bytes")  # type: ignore[arg-type]
    assert len(index) == 1


def test_awkward_texts_do_not_crash() -> None:
    index = NearDuplicateIndex(fuzzy_cutoff=90, semantic_threshold=0.95, embedder=BagOfWordsEmbedder())
    awkward = ["", "   \n\t", "🙂🎉", "Mixed 中文 and English テキスト 한국어", " ".join(["word"] * 10_000)]
    checks = index.check_and_add_many(list(enumerate(awkward)))
    assert [c.is_duplicate for c in checks] == [False, True, False, False, False]
    assert checks[1].signal == "exact"  # whitespace-only normalizes to the empty text, like ""
    assert all(c.nearest_key is None for c in checks)
    again = index.query_batch(awkward)
    assert [c.signal for c in again] == ["exact", "exact", "exact", "exact", "exact"]
    assert again[4].nearest_score == 1.0 and again[3].nearest_score == 1.0


def test_ten_thousand_word_texts_are_scored_exactly() -> None:
    long_a = " ".join(f"w{i % 50}" for i in range(10_000))
    long_b = " ".join(f"w{(i * 7) % 50}" for i in range(10_000))
    index = NearDuplicateIndex(neighbour_floor=0.0)
    index.add("a", long_a)
    check = index.query(long_b)
    assert check.nearest_score == rouge_l_f1(tokenize(long_a), tokenize(long_b))


def test_concurrent_use_keeps_the_greedy_invariants() -> None:
    index = NearDuplicateIndex(rouge_threshold=0.7)
    topics = ["cats", "dogs", "rivers", "stars", "trains", "apples", "chess", "rain"]
    jobs = [
        [(f"t{t}-{n}", f"write a short poem about {topic} number {n % 3}") for n in range(30)]
        for t, topic in enumerate(topics)
    ]
    errors: list[BaseException] = []

    def work(pairs: list[tuple[str, str]]) -> None:
        try:
            for key, text in pairs:
                index.check_and_add(key, text)
                index.query(text)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    kept = [text for job in jobs for key, text in job if key in index]
    # Kept texts are pairwise non-duplicates, and every text is a kept one or a duplicate of one.
    for i, a in enumerate(kept):
        for b in kept[i + 1 :]:
            assert rouge_l_f1(tokenize(a), tokenize(b)) <= 0.7
    for job in jobs:
        for _, text in job:
            assert max(rouge_l_f1(tokenize(text), tokenize(k)) for k in kept) > 0.7 or text in kept
    assert len(index) == len(kept)


def test_the_fuzzy_scan_is_skipped_where_rouge_l_already_decided() -> None:
    index = NearDuplicateIndex(rouge_threshold=0.7, fuzzy_cutoff=80)
    index.add("a", "Write a short poem about the sea at night")
    rouge_dup = index.query("Write a short poem about the sea at dawn")
    assert rouge_dup.signal == "rouge_l" and rouge_dup.fuzzy_score is None
    fuzzy_dup = index.query("Wrte a shrt poam abot the sae at nigth")
    assert fuzzy_dup.signal == "fuzzy" and fuzzy_dup.fuzzy_key == "a"


def test_the_length_band_of_ratio_equals_a_full_scan_on_real_texts(shared_data: Path) -> None:
    """The banded "ratio" search against rapidfuzz over every stored text: same match, same score, same ties."""
    with gzip.open(shared_data / "bench_instructions.jsonl.gz", "rt", encoding="utf-8") as handle:
        texts = [
            normalize_text(json.loads(line)["instruction"])
            for _, line in zip(range(4000), handle, strict=False)
        ]
    rng = random.Random(5)
    queries = [t[: rng.randint(1, len(t))] + t[rng.randint(0, len(t)) :] for t in rng.sample(texts, 150)]
    queries += rng.sample(texts, 50) + ["", "x"]
    for cutoff in (70.0, 90.0, 97.0):
        banded, full = FuzzyStore("ratio", cutoff), FuzzyStore("ratio", cutoff)
        full._banded = False  # the plain full scan, as every other scorer does it
        for text in [*texts, ""]:
            banded.add(text)
            full.add(text)
        assert banded.best_many(queries) == full.best_many(queries)
