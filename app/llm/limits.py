"""How many sequences may be in flight at once on one backend, over every job that uses it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class SequenceLimiter:
    """A semaphore counted in sequences: a request of P prompts with n choices each takes P * n units.

    vLLM batches sequences, not requests, so this is the figure that decides whether its batch is full. A
    request larger than the whole capacity takes all of it (and runs alone) rather than waiting forever.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._free = capacity
        self.peak = 0  # the most units ever held at once: what the server's batch saw at its fullest
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def in_flight(self) -> int:
        return self.capacity - self._free

    @asynccontextmanager
    async def hold(self, units: int) -> AsyncIterator[None]:
        units = max(1, min(units, self.capacity))
        while self._free < units:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._free -= units
        self.peak = max(self.peak, self.capacity - self._free)
        try:
            yield
        finally:
            # Plain arithmetic and set_result: nothing here can be interrupted by a cancellation.
            self._free += units
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
