"""The generation pipeline's near-duplicate step, run off the event loop.

Deduplication is CPU work (tokenizing, ROUGE-L, fuzzy and embedding scans). On the event loop it would stall
every HTTP request and every in-flight LLM call, so it runs in a worker thread. The index's heavy kernels
(rapidfuzz, BLAS) release the GIL and its Python parts yield it every few milliseconds (the interpreter's
switch interval), so the loop keeps running; chunking bounds how long one call holds the index lock and lets a
cancelled task stop between chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable

from app.dedup import DuplicateCheck, NearDuplicateIndex

__all__ = ["build_index_in_thread", "screen_candidates"]


async def screen_candidates(
    index: NearDuplicateIndex, keyed_texts: list[tuple[Hashable, str]], *, chunk_size: int = 64
) -> list[DuplicateCheck]:
    """Greedily check and add candidates, in order, with one check per candidate.

    Same results as one `index.check_and_add_many(keyed_texts)` call: each chunk sees the kept candidates of
    the chunks before it.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    checks: list[DuplicateCheck] = []
    for start in range(0, len(keyed_texts), chunk_size):
        chunk = keyed_texts[start : start + chunk_size]
        checks.extend(await asyncio.to_thread(index.check_and_add_many, chunk))
    return checks


async def build_index_in_thread(
    pairs: Iterable[tuple[Hashable, str]], **index_options: object
) -> NearDuplicateIndex:
    """A new index holding `pairs` (seeds and accepted items), built in a worker thread.

    `index_options` are NearDuplicateIndex's keyword arguments (rouge_threshold, fuzzy_cutoff, embedder, ...).
    """
    materialised = list(pairs)

    def build() -> NearDuplicateIndex:
        index = NearDuplicateIndex(**index_options)  # type: ignore[arg-type]
        index.add_many(materialised)
        return index

    return await asyncio.to_thread(build)
