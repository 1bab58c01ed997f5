"""ScriptedBackend: the unit-test double replies as scripted and records what it was asked."""

from __future__ import annotations

import asyncio

import pytest

from app.config import LLMConfig
from app.llm import (
    ChatMessage,
    Completion,
    LLMBackend,
    LLMError,
    LLMUnavailableError,
    SamplingParams,
    create_backend,
)
from app.llm.fake import ScriptedBackend

PARAMS = SamplingParams(max_tokens=8)


def test_list_script_is_consumed_in_order_and_calls_are_recorded() -> None:
    backend = ScriptedBackend(["one", Completion("two", "length"), "three"])

    async def go() -> tuple[list[Completion], list[Completion]]:
        first = await backend.complete(["p1", "p2"], PARAMS)
        second = await backend.chat([[ChatMessage("user", "q")]], PARAMS, json_schema={"type": "object"})
        return first, second

    first, second = asyncio.run(go())
    assert [c.text for c in first] == ["one", "two"] and first[1].finish_reason == "length"
    assert second[0].text == "three" and second[0].finish_reason == "stop"
    assert backend.prompts == ["p1", "p2", "q"]
    assert backend.calls[1].kind == "chat" and backend.calls[1].json_schema == {"type": "object"}
    assert backend.calls[0].params is PARAMS
    with pytest.raises(LLMError, match="ran out"):
        asyncio.run(backend.complete(["p"], PARAMS))


def test_callable_script_exceptions_and_fail_with() -> None:
    backend = ScriptedBackend(lambda prompt: ValueError("boom") if prompt == "bad" else prompt[::-1])
    assert asyncio.run(backend.complete(["abc"], PARAMS))[0].text == "cba"
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(backend.complete(["bad"], PARAMS))
    backend.fail_with(LLMUnavailableError("down"))
    with pytest.raises(LLMUnavailableError):
        asyncio.run(backend.complete(["abc"], PARAMS))
    backend.fail_with(None)
    assert asyncio.run(backend.complete(["xy"], PARAMS))[0].text == "yx"


def test_factory_builds_each_backend_kind_without_touching_the_network() -> None:
    fake = create_backend(LLMConfig(backend="fake"))
    assert isinstance(fake, ScriptedBackend) and isinstance(fake, LLMBackend)
    for name in ("openai_compat", "llamacpp"):
        backend = create_backend(LLMConfig(backend=name))
        assert isinstance(backend, LLMBackend) and backend.info.backend == name
        asyncio.run(backend.aclose())
