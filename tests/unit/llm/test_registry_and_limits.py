"""Backends by name only, one instance each; the sequence limiter under cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.core.config import BackendSettings, Settings
from app.llm.limits import SequenceLimiter
from app.llm.llamacpp import LlamaCppBackend
from app.llm.openai_compat import OpenAICompatBackend
from app.llm.registry import BackendRegistry, UnknownBackendError, create_backend


def test_unknown_names_are_refused_listing_the_configured_ones() -> None:
    settings = Settings(
        _env_file=None, backends={"qwen": {"kind": "openai", "base_url": "http://gpu:8000/v1"}}
    )  # type: ignore[call-arg]
    registry = BackendRegistry.from_settings(settings)
    with pytest.raises(UnknownBackendError) as caught:
        registry.settings_of("fake")
    assert caught.value.field == "backend"
    assert "configured backends: local, qwen" in caught.value.message


def test_one_instance_per_configured_name_and_never_more() -> None:
    made: list[str] = []

    def factory(name: str, settings: BackendSettings) -> Any:
        made.append(name)
        return object()

    async def go() -> None:
        registry = BackendRegistry(
            {"a": BackendSettings(kind="llamacpp"), "b": BackendSettings(kind="llamacpp")}, factory
        )
        first = await registry.get("a")
        assert await registry.get("a") is first
        await asyncio.gather(*(registry.get("b") for _ in range(10)))
        assert registry.loaded() == ["a", "b"]

    asyncio.run(go())
    assert made == ["a", "b"]


def test_the_factory_builds_each_kind_without_touching_the_network() -> None:
    async def go() -> None:
        remote = create_backend("vllm", BackendSettings(kind="openai", base_url="http://10.0.0.1:8000/v1"))
        local = create_backend("local", BackendSettings(kind="llamacpp"))
        assert isinstance(remote, OpenAICompatBackend) and remote.info.max_in_flight == 64
        assert isinstance(local, LlamaCppBackend) and local.info.max_in_flight == 1
        await remote.aclose()
        await local.aclose()

    asyncio.run(go())


def test_limiter_counts_sequences_and_survives_cancellation() -> None:
    async def go() -> None:
        limiter = SequenceLimiter(4)
        peak = 0

        async def use(units: int) -> None:
            nonlocal peak
            async with limiter.hold(units):
                peak = max(peak, limiter.in_flight)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(use(u) for u in (1, 2, 3, 4, 2, 1, 9)))  # 9 > capacity: takes all, runs alone
        assert peak == 4 and limiter.in_flight == 0
        async with limiter.hold(4):
            waiter = asyncio.create_task(use(1))
            await asyncio.sleep(0.01)
            waiter.cancel()  # cancelled while waiting: takes nothing
            await asyncio.gather(waiter, return_exceptions=True)
        assert limiter.in_flight == 0
        holder = asyncio.create_task(use(3))
        await asyncio.sleep(0.001)
        holder.cancel()  # cancelled while holding: gives everything back
        await asyncio.gather(holder, return_exceptions=True)
        assert limiter.in_flight == 0

    asyncio.run(go())
