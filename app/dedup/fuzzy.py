"""The fuzzy signal: a rapidfuzz score between normalized texts, checked against every stored text that can reach
the cut-off.

Character-level similarity has no token-style prefix bound that would prune much at the cut-offs people use
(85-95 on texts of a few hundred characters): q-gram and character prefix filters were tried on the bench data
and kept a sixth of the texts or more. What does prune exactly is length, for the default scorer "ratio"
(100 * 2 * LCS / (m + n) <= 100 * 2 * min(m, n) / (m + n)): a text of m characters can only reach cut-off c
against texts of m * c / (200 - c) to m * (200 - c) / c characters. The store keeps texts sorted by length, so
that band is one slice, scanned in full by rapidfuzz's `cdist` in C++ (with `score_cutoff`, the GIL released).
The other scorers have no such bound and scan everything. Ties go to the text stored first.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

import numpy as np
from rapidfuzz import fuzz, process

__all__ = ["FUZZY_SCORERS", "FuzzyStore", "resolve_scorer"]

# The rapidfuzz.fuzz scorers that compare two whole strings on the 0-100 scale.
FUZZY_SCORERS = (
    "ratio",
    "partial_ratio",
    "token_sort_ratio",
    "token_set_ratio",
    "token_ratio",
    "partial_token_sort_ratio",
    "partial_token_set_ratio",
    "partial_token_ratio",
    "WRatio",
    "QRatio",
)
# Score at most this many (query, stored text) pairs per cdist call, so the score matrix stays small (8 bytes
# each).
_MAX_CELLS = 2_000_000


def resolve_scorer(name: str) -> Callable[..., float]:
    """The rapidfuzz.fuzz function called `name`; a ValueError naming it (and the valid names) otherwise."""
    if name not in FUZZY_SCORERS:
        raise ValueError(f"unknown fuzzy scorer {name!r}; choose one of: {', '.join(FUZZY_SCORERS)}")
    return getattr(fuzz, name)


class FuzzyStore:
    """Normalized texts in insertion order; best fuzzy match at or above the cut-off for each query.

    Empty normalized texts never match (rapidfuzz would score two empty strings 100): they carry no evidence.
    """

    def __init__(self, scorer: str, cutoff: float) -> None:
        if not 0.0 <= cutoff <= 100.0:
            raise ValueError(f"fuzzy cut-off must be between 0 and 100, got {cutoff}")
        self.scorer_name = scorer
        self._scorer = resolve_scorer(scorer)
        self.cutoff = float(cutoff)
        self._choices: list[str | None] = []  # None for an empty text: rapidfuzz scores it 0
        # "ratio" only: the non-empty texts sorted by (length, position), as three parallel lists.
        self._banded = scorer == "ratio" and self.cutoff > 0.0
        self._sorted_keys: list[tuple[int, int]] = []
        self._sorted_texts: list[str] = []
        self._sorted_positions: list[int] = []

    def __len__(self) -> int:
        return len(self._choices)

    def add(self, normalized: str) -> None:
        position = len(self._choices)
        self._choices.append(normalized or None)
        if self._banded and normalized:
            key = (len(normalized), position)
            at = bisect.bisect_right(self._sorted_keys, key)  # positions only grow: usually the end of a run
            self._sorted_keys.insert(at, key)
            self._sorted_texts.insert(at, normalized)
            self._sorted_positions.insert(at, position)

    def length_band(self, length: int) -> tuple[int, int]:
        """The lengths a text of `length` characters can reach the cut-off with under "ratio" (a little wider:
        float slack only loosens the bound)."""
        c = self.cutoff
        return math.floor(length * c / (200.0 - c) - 1e-9), math.ceil(length * (200.0 - c) / c + 1e-9)

    def best_many(self, queries: Sequence[str]) -> list[tuple[int, float] | None]:
        """(stored position, score) of each query's best match reaching the cut-off; earliest on ties."""
        if self._banded:
            return [self._best_in_band(q) if q else None for q in queries]
        found: list[tuple[int, float] | None] = [None] * len(queries)
        live = [i for i, q in enumerate(queries) if q]
        choices = self._choices
        if not live or not choices:
            return found
        rows = max(1, _MAX_CELLS // len(choices))
        for start in range(0, len(live), rows):
            chunk = live[start : start + rows]
            found_chunk = self._best_rows([queries[i] for i in chunk], choices)
            for i, best in zip(chunk, found_chunk, strict=True):
                found[i] = best
        return found

    def _best_in_band(self, query: str) -> tuple[int, float] | None:
        low, high = self.length_band(len(query))
        start = bisect.bisect_left(self._sorted_keys, (low, -1))
        stop = bisect.bisect_right(self._sorted_keys, (high, len(self._choices)))
        if start >= stop:
            return None
        texts = self._sorted_texts[start:stop]
        workers = -1 if len(texts) >= 4096 else 1
        scores = process.cdist(
            [query], texts, scorer=self._scorer, score_cutoff=self.cutoff, dtype=np.float64, workers=workers
        )[0]
        top = float(scores.max())
        if top < self.cutoff or top <= 0.0:
            return None
        positions = np.asarray(self._sorted_positions[start:stop], dtype=np.int64)
        return int(positions[scores == top].min()), top

    def best_among(self, query: str, others: Sequence[str]) -> tuple[int, float] | None:
        """Like `best_many` for one query against an explicit list (the kept members of a block)."""
        if not query or not others:
            return None
        return self._best_rows([query], [t or None for t in others])[0]

    def _best_rows(self, queries: list[str], choices: Sequence[str | None]) -> list[tuple[int, float] | None]:
        workers = -1 if len(queries) * len(choices) >= 4096 else 1
        scores = process.cdist(
            queries, choices, scorer=self._scorer, score_cutoff=self.cutoff, dtype=np.float64, workers=workers
        )
        at = scores.argmax(axis=1)  # first maximum: the earliest stored text
        top = scores[np.arange(len(queries)), at]
        out: list[tuple[int, float] | None] = []
        for position, score in zip(at.tolist(), top.tolist(), strict=True):
            hit = score >= self.cutoff and (score > 0.0 or self.cutoff == 0.0)
            out.append((position, score) if hit and choices[position] is not None else None)
        return out
