"""The accept step's index in a child process: the same answers as in-process, errors that surface in the
caller, and an event loop that keeps ticking while it works."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from app.dedup import NearDuplicateIndex
from app.dedup.remote import IndexProcess
from tests.support.event_loop import watch_loop


def _texts(shared_data: Path, count: int) -> list[str]:
    with gzip.open(shared_data / "bench_instructions.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line)["instruction"] for _, line in zip(range(count), handle, strict=False)]


def test_the_child_gives_the_same_answers_as_an_index_in_this_process(shared_data: Path) -> None:
    texts = _texts(shared_data, 1500)
    seeds, candidates = texts[:300], [(("new", i), t) for i, t in enumerate(texts[300:])]
    options = {"rouge_threshold": 0.7, "fuzzy_cutoff": 90.0, "neighbour_floor": 0.6}
    remote, local = IndexProcess(**options), NearDuplicateIndex(**options)
    try:
        for index in (remote, local):
            index.add_many([(("seed", i), t) for i, t in enumerate(seeds)])
        assert remote.check_and_add_many(candidates[:600]) == local.check_and_add_many(candidates[:600])
        assert remote.check_and_add_many(candidates[600:]) == local.check_and_add_many(candidates[600:])
        assert len(remote) == len(local) > 300
    finally:
        remote.close()
    remote.close()  # twice is fine


def test_errors_surface_in_the_caller() -> None:
    with pytest.raises(ValueError, match="rouge_threshold"):
        IndexProcess(rouge_threshold=3.0)
    index = IndexProcess()
    try:
        index.add_many([("a", "Write a poem about the sea")])
        with pytest.raises(ValueError, match="already in the index"):
            index.add_many([("a", "the same key twice")])
        assert len(index) == 1  # the child lived on
    finally:
        index.close()
    with pytest.raises(RuntimeError, match="closed"):
        index.check_and_add_many([("b", "x")])


def test_the_event_loop_keeps_ticking_while_the_child_dedups(shared_data: Path) -> None:
    texts = _texts(shared_data, 6000)
    index = IndexProcess(rouge_threshold=0.7)
    try:
        work = asyncio.to_thread(index.check_and_add_many, list(enumerate(texts)))
        watch = asyncio.run(watch_loop(work, tick=0.005))
    finally:
        index.close()
    assert watch.seconds > 0.2 and len(watch.gaps) > 20
    # Ticks 5 ms apart arrive on time: an index holding this process's GIL would stall them again and again. One
    # late tick in a hundred is allowed (a busy machine may deschedule the process once, whatever it runs).
    late = [gap for gap in watch.gaps if gap > 0.05]
    assert len(late) <= max(1, len(watch.gaps) // 100), f"{len(late)} of {len(watch.gaps)} ticks late: {late}"
