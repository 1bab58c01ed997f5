"""NearDuplicateIndex: is this text a near-duplicate of anything already accepted, and of what?

Four signals, each exact against everything in the index, reported in this order when several fire:
- "exact": the normalized text (NFKC, casefold, collapsed whitespace; see app.dedup.normalize) equals a
  stored one (compared by a 16-byte BLAKE2 digest).
- "rouge_l": the highest ROUGE-L F1 (rouge-score's value, on app.dedup.tokenize tokens) is strictly greater
  than `rouge_threshold`, as in Alpaca and Self-Instruct.
- "fuzzy" (opt-in): a rapidfuzz.fuzz score between normalized texts is at least `fuzzy_cutoff` (0-100).
- "semantic" (opt-in): the cosine similarity of sentence embeddings is at least `semantic_threshold`.

What each check reports about the neighbours:
- nearest_key / nearest_score: the entry with the highest ROUGE-L F1 and that F1, exact whenever it is at
  least `neighbour_floor` (capped at `rouge_threshold`, so a ROUGE-L duplicate always has its neighbour); None
  when no entry reaches the floor. A kept text's weaker neighbours are not searched for: finding them would
  mean scoring most of the index (see docs/BENCHMARKS.md for the cost of lowering the floor).
- fuzzy_key / fuzzy_score: the best fuzzy match when it reaches the cut-off (rapidfuzz stops scoring below
  it), else None; not searched for a text already found an exact or ROUGE-L duplicate (the scan is the
  costliest step and could not change the verdict).
- semantic_key / semantic_score: the nearest embedding, always (the scan is exhaustive anyway).
- exact_key: the first stored entry with the same normalized text.
Ties go to the entry added first.

Greedy use (`check_and_add_many`) behaves exactly as checking and adding one text at a time: texts are taken
in blocks; each block is searched against the index at once (vectorised), then resolved in order against the
index result and against the block's own kept members, and the kept members are added. Every public method
takes an internal lock, so one index can serve several threads; the CPU-heavy parts (rapidfuzz, BLAS) release
the GIL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from app.dedup.fuzzy import FuzzyStore
from app.dedup.normalize import normalize_text, text_digest
from app.dedup.rouge_index import RougeLIndex
from app.dedup.semantic import Embedder, SemanticStore, normalise_rows
from app.dedup.tokenize import tokenize

__all__ = ["SIGNALS", "DuplicateCheck", "NearDuplicateIndex"]

SIGNALS = ("exact", "rouge_l", "fuzzy", "semantic")
# Texts checked together: large enough to amortise NumPy's per-call cost, small enough that comparing each
# member with the block's kept members (a brute force) stays cheap. Measured best between 32 and 64.
BLOCK_SIZE = 64
# A greedy call at least this large, and at least as large as the index, first primes the token order with its
# own texts (see RougeLIndex.prime): a one-pass cost that roughly halves the candidates on real data.
PRIME_MIN_TEXTS = 2048


@dataclass(frozen=True, slots=True)
class DuplicateCheck:
    """The verdict on one text and the evidence for it (see the module docstring for each field's meaning)."""

    is_duplicate: bool
    signal: str | None
    nearest_key: Hashable | None
    nearest_score: float | None
    fuzzy_key: Hashable | None = None
    fuzzy_score: float | None = None
    semantic_key: Hashable | None = None
    semantic_score: float | None = None
    exact_key: Hashable | None = None


@dataclass(slots=True)
class _Prepared:
    """What a text needs for checking and adding, computed outside the lock."""

    key: Hashable
    tokens: list[str] | None  # None when `seq` was computed ahead (a primed call)
    seq: str | list[int] | None
    normalized: str
    digest: bytes | None
    embedding: np.ndarray | None


class NearDuplicateIndex:
    """Accepted texts (seeds and dataset items) under caller-chosen keys, checkable for near-duplicates.

    Keys are any hashable values but None (the pipeline uses ("seed", id) and ("item", id), the CLI the line
    index); each key may be added once. Options: `rouge_threshold` (drop iff F1 > it); `fuzzy_cutoff` (None:
    off) with `fuzzy_scorer`, a rapidfuzz.fuzz function name; `semantic_threshold` (None: off) with an
    `embedder`; `exact` (the exact-text signal, on by default); `neighbour_floor`, the lowest ROUGE-L F1 for
    which a kept text's nearest neighbour is still searched and reported (lower costs more).
    """

    def __init__(
        self,
        *,
        rouge_threshold: float = 0.7,
        fuzzy_cutoff: float | None = None,
        fuzzy_scorer: str = "ratio",
        semantic_threshold: float | None = None,
        embedder: Embedder | None = None,
        exact: bool = True,
        neighbour_floor: float = 0.5,
    ) -> None:
        if not 0.0 <= rouge_threshold <= 1.0:
            raise ValueError(f"rouge_threshold must be between 0 and 1, got {rouge_threshold}")
        if not 0.0 <= neighbour_floor <= 1.0:
            raise ValueError(f"neighbour_floor must be between 0 and 1, got {neighbour_floor}")
        if semantic_threshold is not None and embedder is None:
            raise ValueError("semantic_threshold needs an embedder")
        self.rouge_threshold = float(rouge_threshold)
        self.neighbour_floor = min(float(neighbour_floor), self.rouge_threshold)
        self.exact = exact
        self._lock = threading.RLock()
        self._keys: list[Hashable] = []
        self._key_set: set[Hashable] = set()
        self._rouge = RougeLIndex(self.neighbour_floor)
        self._digests: dict[bytes, int] = {}
        # A fuzzy store is built even when the signal is off, so that a bad scorer name fails here, not later.
        self._fuzzy = FuzzyStore(fuzzy_scorer, fuzzy_cutoff if fuzzy_cutoff is not None else 100.0)
        self.fuzzy_cutoff = fuzzy_cutoff
        self._embedder = embedder
        self._semantic = SemanticStore(semantic_threshold) if semantic_threshold is not None else None

    # --- size and membership ------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._key_set

    @property
    def semantic_threshold(self) -> float | None:
        return self._semantic.threshold if self._semantic is not None else None

    # --- adding -------------------------------------------------------------------------------------------

    def add(self, key: Hashable, text: str) -> None:
        """Store a text unconditionally (a seed, or an item accepted earlier)."""
        self.add_many([(key, text)])

    def add_many(self, pairs: Iterable[tuple[Hashable, str]]) -> None:
        """Store many texts unconditionally, in order."""
        pairs = list(pairs)
        with self._lock:
            self._check_new_keys([key for key, _ in pairs])
        seqs = self._prime([t for _, t in pairs]) if len(pairs) >= max(PRIME_MIN_TEXTS, len(self)) else None
        for start in range(0, len(pairs), BLOCK_SIZE):
            block_seqs = seqs[start : start + BLOCK_SIZE] if seqs is not None else None
            prepared = self._prepare(pairs[start : start + BLOCK_SIZE], block_seqs)
            with self._lock:
                for p in prepared:
                    seq = p.seq if p.seq is not None else self._rouge.encode(p.tokens or [], grow=True)
                    self._store(p, seq)

    # --- checking -----------------------------------------------------------------------------------------

    def query(self, text: str) -> DuplicateCheck:
        """Check one text against the index, without adding it."""
        return self.query_batch([text])[0]

    def query_batch(self, texts: Sequence[str]) -> list[DuplicateCheck]:
        """Check each text against the index only (not against each other), adding nothing."""
        if isinstance(texts, str):
            raise TypeError("query_batch() takes a sequence of texts; use query() for one text")
        out: list[DuplicateCheck] = []
        for start in range(0, len(texts), BLOCK_SIZE):
            prepared = self._prepare([(None, t) for t in texts[start : start + BLOCK_SIZE]])
            with self._lock:
                out.extend(self._check_block(prepared, greedy=False))
        return out

    def check_and_add(self, key: Hashable, text: str) -> DuplicateCheck:
        """Check one text and add it if it is not a duplicate."""
        return self.check_and_add_many([(key, text)])[0]

    def check_and_add_many(
        self, pairs: Iterable[tuple[Hashable, str]], *, progress: Callable[[int], None] | None = None
    ) -> list[DuplicateCheck]:
        """Greedy, in order: each text is checked against the index and the texts of this call kept before it,
        and added when it is not a duplicate: the same results as `check_and_add` on each text in turn.

        `progress`, if given, is called with the number of texts done after each block.
        """
        pairs = list(pairs)
        with self._lock:
            self._check_new_keys([key for key, _ in pairs])
        seqs = self._prime([t for _, t in pairs]) if len(pairs) >= max(PRIME_MIN_TEXTS, len(self)) else None
        out: list[DuplicateCheck] = []
        for start in range(0, len(pairs), BLOCK_SIZE):
            block = pairs[start : start + BLOCK_SIZE]
            prepared = self._prepare(block, seqs[start : start + BLOCK_SIZE] if seqs is not None else None)
            with self._lock:
                out.extend(self._check_block(prepared, greedy=True))
            if progress is not None:
                progress(len(out))
        return out

    # --- internals ------------------------------------------------------------------------------------------

    def _prime(self, texts: list[str]) -> list[str | list[int]]:
        """Encode a large batch once (growing the vocabulary) and prime the ROUGE-L order with it."""
        seqs: list[str | list[int]] = []
        for start in range(0, len(texts), 512):  # small chunks: token lists take ~60 bytes per token
            tokens = [tokenize(t) for t in texts[start : start + 512]]
            with self._lock:
                seqs.extend(self._rouge.encode(t, grow=True) for t in tokens)
        with self._lock:
            self._rouge.prime(seqs)
        return seqs

    def _prepare(
        self, pairs: list[tuple[Hashable, str]], seqs: list[str | list[int]] | None = None
    ) -> list[_Prepared]:
        """Tokens, normal form, digest and embedding of each text: pure work, done before taking the lock."""
        for _, text in pairs:
            if not isinstance(text, str):
                raise TypeError(f"texts must be str, got {type(text).__name__}")
        # The normal form feeds the exact, fuzzy and semantic signals; ROUGE-L alone does not need it.
        needs_normal_form = self.exact or self.fuzzy_cutoff is not None or self._semantic is not None
        normalized = [normalize_text(t) if needs_normal_form else "" for _, t in pairs]
        embeddings: np.ndarray | None = None
        if self._semantic is not None and pairs:
            assert self._embedder is not None
            embeddings = normalise_rows(self._embedder.encode([t for _, t in pairs]))
            if embeddings.shape[0] != len(pairs):
                raise ValueError(f"the embedder returned {embeddings.shape[0]} rows for {len(pairs)} texts")
            embeddings[[not n for n in normalized]] = 0.0  # a text with no content matches nothing
        return [
            _Prepared(
                key=key,
                tokens=tokenize(text) if seqs is None else None,
                seq=seqs[i] if seqs is not None else None,
                normalized=norm,
                digest=text_digest(norm) if self.exact else None,
                embedding=embeddings[i] if embeddings is not None else None,
            )
            for i, ((key, text), norm) in enumerate(zip(pairs, normalized, strict=True))
        ]

    def _check_new_keys(self, keys: list[Hashable]) -> None:
        seen: set[Hashable] = set()
        for key in keys:
            if key is None:
                raise ValueError(
                    "an entry key must not be None (None means 'no neighbour' in a DuplicateCheck)"
                )
            if key in self._key_set or key in seen:
                raise ValueError(f"key {key!r} is already in the index (or twice in this call)")
            seen.add(key)

    def _store(self, p: _Prepared, seq: str | list[int]) -> None:
        eid = len(self._keys)
        self._keys.append(p.key)
        self._key_set.add(p.key)
        self._rouge.add_seq(seq)
        if p.digest is not None:
            self._digests.setdefault(p.digest, eid)
        if self.fuzzy_cutoff is not None:
            self._fuzzy.add(p.normalized)
        if self._semantic is not None:
            assert p.embedding is not None
            self._semantic.add_many(p.embedding[None, :])

    def _check_block(self, block: list[_Prepared], *, greedy: bool) -> list[DuplicateCheck]:
        keys = self._keys
        seqs = [
            p.seq if p.seq is not None else self._rouge.encode(p.tokens or [], grow=greedy) for p in block
        ]
        rouge = self._rouge.search_block(seqs)
        fuzzy: list[tuple[int, float] | None] | None = None
        if self.fuzzy_cutoff is not None:
            # Scan only where it can still decide: the index already calls the others exact or ROUGE-L duplicates.
            open_ = [q for q, p in enumerate(block) if not self._decided(p, rouge.index_best[q])]
            fuzzy = [None] * len(block)
            for q, found in zip(
                open_, self._fuzzy.best_many([block[q].normalized for q in open_]), strict=True
            ):
                fuzzy[q] = found
        semantic = None
        if self._semantic is not None:
            matrix = np.stack([p.embedding for p in block])  # type: ignore[misc]
            semantic = self._semantic.best_many(matrix, [bool(p.normalized) for p in block])
        kept: list[int] = []  # members of this block kept so far (greedy only)
        kept_digests: dict[bytes, int] = {}
        out: list[DuplicateCheck] = []
        for q, p in enumerate(block):
            exact_key = None
            if p.digest is not None:
                eid = self._digests.get(p.digest)
                if eid is not None:
                    exact_key = keys[eid]
                elif p.digest in kept_digests:
                    exact_key = block[kept_digests[p.digest]].key

            nearest_key, nearest_score = None, None
            found = rouge.index_best[q]
            if found is not None:
                nearest_key, nearest_score = keys[found[0]], found[1]
            if greedy:
                within = rouge.best_within(q)
                if within is not None and (nearest_score is None or within[1] > nearest_score):
                    nearest_key, nearest_score = block[within[0]].key, within[1]

            fuzzy_key, fuzzy_score = None, None
            if fuzzy is not None:
                if fuzzy[q] is not None:
                    fuzzy_key, fuzzy_score = keys[fuzzy[q][0]], fuzzy[q][1]  # type: ignore[index]
                decided = exact_key is not None or (
                    nearest_score is not None and nearest_score > self.rouge_threshold
                )
                if greedy and kept and not decided:
                    within_f = self._fuzzy.best_among(p.normalized, [block[k].normalized for k in kept])
                    if within_f is not None and (fuzzy_score is None or within_f[1] > fuzzy_score):
                        fuzzy_key, fuzzy_score = block[kept[within_f[0]]].key, within_f[1]

            semantic_key, semantic_score = None, None
            if semantic is not None:
                if semantic[q] is not None:
                    semantic_key, semantic_score = keys[semantic[q][0]], semantic[q][1]  # type: ignore[index]
                if greedy and kept and p.normalized:
                    rows = np.stack([block[k].embedding for k in kept])  # type: ignore[misc]
                    within_s = SemanticStore.best_among(p.embedding, rows)  # type: ignore[arg-type]
                    if within_s is not None and (semantic_score is None or within_s[1] > semantic_score):
                        semantic_key, semantic_score = block[kept[within_s[0]]].key, within_s[1]

            signal = self._signal(exact_key, nearest_score, fuzzy_score, semantic_score)
            out.append(
                DuplicateCheck(
                    is_duplicate=signal is not None,
                    signal=signal,
                    nearest_key=nearest_key,
                    nearest_score=nearest_score,
                    fuzzy_key=fuzzy_key,
                    fuzzy_score=fuzzy_score,
                    semantic_key=semantic_key,
                    semantic_score=semantic_score,
                    exact_key=exact_key,
                )
            )
            if greedy and signal is None:
                rouge.keep(q)
                kept.append(q)
                if p.digest is not None:
                    kept_digests.setdefault(p.digest, q)
        for q in kept:
            self._store(block[q], seqs[q])
        return out

    def _decided(self, p: _Prepared, rouge_best: tuple[int, float] | None) -> bool:
        """Whether the index alone already makes `p` an exact or ROUGE-L duplicate (no fuzzy scan needed)."""
        if p.digest is not None and p.digest in self._digests:
            return True
        return rouge_best is not None and rouge_best[1] > self.rouge_threshold

    def _signal(
        self,
        exact_key: Hashable | None,
        rouge_score: float | None,
        fuzzy_score: float | None,
        semantic_score: float | None,
    ) -> str | None:
        if exact_key is not None:
            return "exact"
        if rouge_score is not None and rouge_score > self.rouge_threshold:
            return "rouge_l"
        if fuzzy_score is not None and self.fuzzy_cutoff is not None and fuzzy_score >= self.fuzzy_cutoff:
            return "fuzzy"
        threshold = self.semantic_threshold
        if semantic_score is not None and threshold is not None and semantic_score >= threshold:
            return "semantic"
        return None
