"""OpenAICompatBackend against REAL OpenAI-compatible HTTP servers serving the real embedded model.

Two servers: tests/support/openai_llama_server.py (vLLM's request shapes: prompt lists, json_schema) and
llama-cpp-python's own server (one prompt per request, json_object + schema), which exercises the fallback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.llm import ChatMessage, Completion, LLMRequestError, LLMUnavailableError, SamplingParams
from app.llm.openai_compat import OpenAICompatBackend
from tests.support.llm_schemas import assert_follows_tasks_schema, tasks_schema
from tests.support.openai_server import RunningServer, free_port, running_openai_server

# The session-scoped `openai_server` fixture is registered once for the whole suite in tests/conftest.py.
pytestmark = [pytest.mark.model, pytest.mark.slow]

FAST_RETRIES: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.05}
SCHEMA = tasks_schema(max_items=1)
CHAT = [
    ChatMessage("system", "You write new tasks for training an assistant. Answer in JSON."),
    ChatMessage("user", "Write one new task with an instruction, an input and an output."),
]


class CountingTransport(httpx.AsyncBaseTransport):
    """The real HTTP transport, counting the requests that go through it."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def complete(server: RunningServer, prompts: list[str], params: SamplingParams, **kwargs: Any) -> Any:
    transport = CountingTransport()

    async def go() -> list[Completion]:
        config = server.llm_config(**kwargs.pop("config", {}))
        async with OpenAICompatBackend(config, transport=transport, **FAST_RETRIES, **kwargs) as backend:
            return await backend.complete(prompts, params)

    return asyncio.run(go()), transport.requests


def test_server_lists_its_model(openai_server: RunningServer) -> None:
    async def go() -> tuple[list[str], dict[str, Any]]:
        async with OpenAICompatBackend(openai_server.llm_config()) as backend:
            return await backend.list_models(), await backend.health()

    models, health = asyncio.run(go())
    assert models == [openai_server.model] and health["ok"] is True


def test_a_list_of_three_prompts_goes_in_one_request(openai_server: RunningServer) -> None:
    prompts = ["The capital of France is", "1, 2, 3, 4,", "My favourite fruit is"]
    results, requests = complete(openai_server, prompts, SamplingParams(max_tokens=8, temperature=0.0))
    assert len(requests) == 1
    assert len(results) == 3
    assert all(r.text.strip() and r.finish_reason in ("stop", "length") for r in results)
    assert all(r.completion_tokens > 0 for r in results)
    # Prompt order is kept: greedy decoding of the counting prompt continues the count.
    assert "5" in results[1].text


def test_chat_with_json_schema_returns_json_following_it(openai_server: RunningServer) -> None:
    async def go() -> list[Completion]:
        async with OpenAICompatBackend(openai_server.llm_config(), **FAST_RETRIES) as backend:
            params = SamplingParams(max_tokens=300, temperature=0.7, seed=5)
            return await backend.chat([CHAT, CHAT], params, json_schema=SCHEMA)

    results = asyncio.run(go())
    assert len(results) == 2
    for result in results:
        assert result.finish_reason == "stop", result.text
        assert_follows_tasks_schema(result.text, max_items=1)


def test_unknown_model_is_a_request_error_without_retries(openai_server: RunningServer) -> None:
    with pytest.raises(LLMRequestError, match="HTTP 404.*does not exist") as info:
        complete(openai_server, ["x"], SamplingParams(max_tokens=2), config={"model": "no-such-model"})
    assert "no-such-model" in str(info.value)


def test_invalid_request_is_a_request_error_sent_once(openai_server: RunningServer) -> None:
    transport = CountingTransport()

    async def go() -> None:
        async with OpenAICompatBackend(
            openai_server.llm_config(), transport=transport, **FAST_RETRIES
        ) as backend:
            await backend.chat([CHAT], SamplingParams(max_tokens=2, temperature=5.0))

    with pytest.raises(LLMRequestError, match="HTTP 400.*temperature"):
        asyncio.run(go())
    assert len(transport.requests) == 1


def test_a_server_that_is_down_is_unavailable_after_quick_retries() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    down = RunningServer(base_url, "SmolLM2-135M-Instruct")
    started = time.monotonic()
    with pytest.raises(LLMUnavailableError) as info:
        complete(down, ["x"], SamplingParams(max_tokens=2), config={"max_retries": 3})
    message = str(info.value)
    assert f"{base_url}/completions" in message and "4 attempt" in message and "ConnectError" in message
    assert time.monotonic() - started < 5


def test_api_key_is_required_and_accepted() -> None:
    with running_openai_server(api_key="sesame") as server:
        results, _ = complete(server, ["Hi"], SamplingParams(max_tokens=2), config={"api_key": "sesame"})
        assert len(results) == 1
        with pytest.raises(LLMRequestError, match="HTTP 401"):
            complete(server, ["Hi"], SamplingParams(max_tokens=2), config={"api_key": "wrong"})


# -- llama-cpp-python's own server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_cpp_server() -> Iterator[RunningServer]:
    with running_openai_server(implementation="llama_cpp") as server:
        yield server


def test_llama_cpp_server_gets_json_object_after_rejecting_json_schema(
    llama_cpp_server: RunningServer,
) -> None:
    transport = CountingTransport()

    async def go() -> tuple[list[Completion], str]:
        config = llama_cpp_server.llm_config()
        async with OpenAICompatBackend(config, transport=transport, **FAST_RETRIES) as backend:
            params = SamplingParams(max_tokens=300, temperature=0.7, seed=5)
            first = await backend.chat([CHAT], params, json_schema=SCHEMA)
            second = await backend.chat([CHAT], params, json_schema=SCHEMA)
            return first + second, backend.structured_output

    results, style = asyncio.run(go())
    assert style == "json_object"
    assert len(transport.requests) == 3  # one rejected json_schema request, then json_object only
    for result in results:
        assert_follows_tasks_schema(result.text, max_items=1)


def test_llama_cpp_server_completions_one_prompt_per_request(llama_cpp_server: RunningServer) -> None:
    prompts = ["The capital of France is", "1, 2, 3, 4,"]
    results, requests = complete(
        llama_cpp_server, prompts, SamplingParams(max_tokens=6, temperature=0.0), max_batch=1
    )
    assert len(requests) == 2 and len(results) == 2
    assert all(r.text.strip() for r in results)
