"""Measure how long the event loop goes without running a ready coroutine while some awaited work runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LoopWatch(Generic[T]):
    result: T
    seconds: float  # how long the awaited work took
    gaps: list[float]  # time between consecutive heartbeat ticks

    @property
    def max_gap(self) -> float:
        return max(self.gaps)

    def stalled(self, longer_than: float) -> float:
        """Seconds spent in gaps longer than `longer_than`: a blocked loop spends nearly all its time there, a
        free loop on a loaded machine only its scattered scheduler and garbage-collection pauses."""
        return sum(gap for gap in self.gaps if gap > longer_than)


async def watch_loop(work: Awaitable[T], *, tick: float = 0.001) -> LoopWatch[T]:
    """Await `work` while a heartbeat sleeping `tick` seconds records every gap between its wake-ups."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(tick)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    started = time.perf_counter()
    try:
        result = await work
    finally:
        seconds = time.perf_counter() - started
        done.set()
        await beat
    return LoopWatch(result, seconds, gaps)
