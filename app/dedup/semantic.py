"""The semantic signal: cosine similarity of sentence embeddings, an exact scan by matrix product.

Rows are L2-normalised, so cosine similarity is a dot product, and one float32 matrix product (BLAS, which
releases the GIL) scores a whole block of queries against every stored row. At 384 dimensions this costs about
1.5 KB of memory per stored text and well under a millisecond per thousand stored texts per query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Embedder", "SemanticStore", "normalise_rows"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into sentence embeddings: float32 rows, L2-normalised, one row per text."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def normalise_rows(rows: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows (zero rows stay zero), whatever the embedder promised."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError(f"an embedder must return a 2-D array, got shape {rows.shape}")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


class SemanticStore:
    """Embeddings in insertion order; the nearest stored row (highest cosine, earliest on ties) per query."""

    def __init__(self, threshold: float) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"semantic threshold must be between -1 and 1, got {threshold}")
        self.threshold = float(threshold)
        self._rows = np.zeros((0, 0), dtype=np.float32)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add_many(self, rows: np.ndarray) -> None:
        """Append unit rows (a zero row for a text with no content: it matches nothing)."""
        if rows.shape[0] == 0:
            return
        if self._rows.shape[1] == 0:
            self._rows = np.zeros((max(1024, rows.shape[0]), rows.shape[1]), dtype=np.float32)
        elif rows.shape[1] != self._rows.shape[1]:
            raise ValueError(f"embedding width changed from {self._rows.shape[1]} to {rows.shape[1]}")
        needed = self._size + rows.shape[0]
        if needed > self._rows.shape[0]:
            grown = np.zeros((max(needed, 2 * self._rows.shape[0]), self._rows.shape[1]), dtype=np.float32)
            grown[: self._size] = self._rows[: self._size]
            self._rows = grown
        self._rows[self._size : needed] = rows
        self._size = needed

    def best_many(self, queries: np.ndarray, live: Sequence[bool]) -> list[tuple[int, float] | None]:
        """(stored position, cosine) of each live query's nearest stored row; None for the others."""
        found: list[tuple[int, float] | None] = [None] * len(live)
        if self._size == 0 or not any(live):
            return found
        sims = queries @ self._rows[: self._size].T
        at = sims.argmax(axis=1)
        top = sims[np.arange(len(live)), at]
        for i, (position, score) in enumerate(zip(at.tolist(), top.tolist(), strict=True)):
            if live[i]:
                found[i] = (position, float(score))
        return found

    @staticmethod
    def best_among(query: np.ndarray, others: np.ndarray) -> tuple[int, float] | None:
        """Nearest row of `others` (the kept members of a block) to one query row."""
        if others.shape[0] == 0:
            return None
        sims = others @ query
        at = int(sims.argmax())
        return at, float(sims[at])
