"""The fuzzy signal: a rapidfuzz score between normalized texts, checked against every stored text.

Character-level similarity has no token-style prefix bound that would prune much at the cut-offs people use
(85-95 on texts of a few hundred characters), so this is an exact full scan: rapidfuzz's `cdist` in C++, with
`score_cutoff` (which lets rapidfuzz skip hopeless pairs, e.g. by length for "ratio"), all cores, and the GIL
released while it runs. Cost: about 1 microsecond per stored text per query for "ratio" on texts of ~300
characters; the token-based scorers cost several times more.
"""

from __future__ import annotations

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

    def __len__(self) -> int:
        return len(self._choices)

    def add(self, normalized: str) -> None:
        self._choices.append(normalized or None)

    def best_many(self, queries: Sequence[str]) -> list[tuple[int, float] | None]:
        """(stored position, score) of each query's best match reaching the cut-off; earliest on ties."""
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
