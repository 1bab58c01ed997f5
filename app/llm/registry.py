"""The configured backends, by name: the only way anything in Sprout gets an LLM.

A backend is costly to make (a loaded model, a connection pool), so each configured name gets one instance,
made on first use and shared by every job that names it; the pool can never hold more backends than the
settings name. Nothing else can be asked for: there is no URL, key or file path to pass in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from app.core.config import BackendSettings, Settings
from app.core.errors import InvalidFieldError
from app.llm.base import LLMBackend

BackendFactory = Callable[[str, BackendSettings], LLMBackend]


class UnknownBackendError(InvalidFieldError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__("backend", f"unknown backend {name!r}; configured backends: {', '.join(known)}")
        self.name = name
        self.known = known


def create_backend(name: str, settings: BackendSettings) -> LLMBackend:
    """A fresh backend for one configured name; the caller owns it and must `await backend.aclose()`.
    Imports stay lazy, so a missing optional package only matters when its backend is used."""
    if settings.kind == "openai":
        from app.llm.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(name, settings)
    from app.llm.llamacpp import LlamaCppBackend

    return LlamaCppBackend(name, settings)


class BackendRegistry:
    def __init__(
        self, backends: Mapping[str, BackendSettings], factory: BackendFactory = create_backend
    ) -> None:
        self._settings = dict(backends)
        self._factory = factory
        self._backends: dict[str, LLMBackend] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, factory: BackendFactory = create_backend) -> BackendRegistry:
        return cls(settings.backends, factory)

    @property
    def names(self) -> list[str]:
        return sorted(self._settings)

    def settings_of(self, name: str) -> BackendSettings:
        """The settings of a configured backend; UnknownBackendError (a 422 naming `backend`) otherwise."""
        try:
            return self._settings[name]
        except KeyError:
            raise UnknownBackendError(name, self.names) from None

    async def get(self, name: str) -> LLMBackend:
        settings = self.settings_of(name)
        async with self._lock:
            backend = self._backends.get(name)
            if backend is None:
                # In a thread: the first use imports the SDK or loads llama.cpp, which would stall the loop.
                backend = self._backends[name] = await asyncio.to_thread(self._factory, name, settings)
            return backend

    def loaded(self) -> list[str]:
        return sorted(self._backends)

    async def aclose(self) -> None:
        async with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            await backend.aclose()
