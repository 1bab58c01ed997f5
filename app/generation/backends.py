"""Backends are costly to make (a loaded model, a connection pool): one per distinct configuration, reused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.config import LLMConfig
from app.llm import LLMBackend, create_backend

BackendFactory = Callable[[LLMConfig], LLMBackend]


class BackendPool:
    def __init__(self, factory: BackendFactory = create_backend) -> None:
        self._factory = factory
        self._backends: dict[str, LLMBackend] = {}
        self._lock = asyncio.Lock()

    async def get(self, config: LLMConfig) -> LLMBackend:
        key = config.model_dump_json()
        async with self._lock:
            backend = self._backends.get(key)
            if backend is None:
                backend = self._backends[key] = self._factory(config)
            return backend

    async def aclose(self) -> None:
        async with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            await backend.aclose()
