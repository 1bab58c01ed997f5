"""OpenAICompatBackend against REAL OpenAI-compatible HTTP servers serving the real embedded model, with
requests sent concurrently, as a job sends them.

Two servers here: tests/support/openai_llama_server.py (the project's test server: vLLM's request shapes,
prompt lists, json_schema, n) and llama-cpp-python's own server (one prompt per request, json_object + schema),
which exercises the structured-output fallback under concurrency. vLLM itself: test_vllm.py.
Assertions hold for any tokens the model writes on any CPU: shapes, counts, that the schema was applied.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx2
import pytest

from app.core.config import BackendSettings
from app.llm import ChatMessage, LLMFatalError, LLMUnavailableError, Reply, SamplingParams
from app.llm.openai_compat import OpenAICompatBackend
from tests.support.llm_schemas import assert_follows_tasks_schema, tasks_schema
from tests.support.openai_server import RunningServer, free_port, running_openai_server

pytestmark = [pytest.mark.model, pytest.mark.slow]

SCHEMA = tasks_schema(max_items=1)
CHAT = [
    ChatMessage("system", "You write new tasks for training an assistant. Answer in JSON."),
    ChatMessage("user", "Write one new task with an instruction, an input and an output."),
]


class Recording(httpx2.AsyncBaseTransport):
    """The real HTTP transport, keeping the body of every request that goes through it."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(json.loads(request.content) if request.content else {})
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def backend_for(settings: BackendSettings, recording: Recording | None = None) -> OpenAICompatBackend:
    client = httpx2.AsyncClient(transport=recording or httpx2.AsyncHTTPTransport())
    return OpenAICompatBackend("test", settings, http_client=client, backoff_initial=0.01)


def concurrently(backend: OpenAICompatBackend, calls: list[Any]) -> list[Reply]:
    async def go() -> list[Reply]:
        try:
            return list(await asyncio.gather(*(call(backend) for call in calls)))
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_concurrent_chats_with_json_schema_and_n_follow_the_schema(openai_server: RunningServer) -> None:
    recording = Recording()
    backend = backend_for(openai_server.backend_settings(max_in_flight=4), recording)
    params = SamplingParams(max_tokens=200, temperature=0.7, n=2)
    replies = concurrently(backend, [lambda b: b.chat(CHAT, params, json_schema=SCHEMA)] * 3)
    assert backend.peak_in_flight == 4  # two requests of n=2 at a time
    for reply in replies:
        assert len(reply.choices) == 2 and reply.completion_tokens > 0
        for choice in reply.choices:
            assert choice.text is not None
            if choice.finish_reason == "stop":  # the grammar closed the JSON: it follows the schema
                assert_follows_tasks_schema(choice.text, max_items=1)
    assert all(b["response_format"]["type"] == "json_schema" for b in recording.bodies)


def test_a_list_of_prompts_goes_in_one_request_and_comes_back_in_order(openai_server: RunningServer) -> None:
    recording = Recording()
    backend = backend_for(openai_server.backend_settings(), recording)
    prompts = ["The capital of France is", "1, 2, 3, 4,", "My favourite fruit is"]
    [reply] = concurrently(
        backend, [lambda b: b.complete(prompts, SamplingParams(max_tokens=6, n=2, temperature=0.8))]
    )
    assert len(recording.bodies) == 1 and recording.bodies[0]["prompt"] == prompts
    assert [c.prompt_index for c in reply.choices] == [0, 0, 1, 1, 2, 2]
    assert all(c.text is not None and c.finish_reason in ("stop", "length") for c in reply.choices)


def test_an_unknown_model_and_wrong_credentials_are_fatal_and_sent_once() -> None:
    with running_openai_server(api_key="sesame") as server:
        for settings, cause in [
            (server.backend_settings(api_key="sesame", model="no-such-model"), "HTTP 404"),
            (server.backend_settings(api_key="wrong"), "rejected the credentials"),
        ]:
            recording = Recording()
            with pytest.raises(LLMFatalError, match=cause):
                concurrently(
                    backend_for(settings, recording), [lambda b: b.chat(CHAT, SamplingParams(max_tokens=2))]
                )
            assert len(recording.bodies) == 1
        [reply] = concurrently(
            backend_for(server.backend_settings(api_key="sesame")),
            [lambda b: b.chat(CHAT, SamplingParams(max_tokens=2))],
        )
        assert len(reply.choices) == 1


def test_a_server_that_is_down_is_unavailable_after_quick_retries() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    settings = BackendSettings(kind="openai", base_url=base_url, max_retries=3, backoff_max=0.05)
    started = time.monotonic()
    with pytest.raises(LLMUnavailableError) as info:
        concurrently(backend_for(settings), [lambda b: b.complete(["x"], SamplingParams(max_tokens=2))])
    message = str(info.value)
    assert base_url in message and "4 attempt" in message and "connection failed" in message
    assert time.monotonic() - started < 5


# -- llama-cpp-python's own server ---------------------------------------------------------------------------


def test_llama_cpp_server_concurrent_chats_all_switch_to_json_object(llama_cpp_server: RunningServer) -> None:
    """Four requests in flight at once get the json_schema rejection together; each is re-sent as json_object
    (until [3/8] the three that found the switch already made failed the whole batch)."""
    recording = Recording()
    backend = backend_for(llama_cpp_server.backend_settings(max_in_flight=4), recording)
    params = SamplingParams(max_tokens=160, temperature=0.7)
    replies = concurrently(backend, [lambda b: b.chat(CHAT, params, json_schema=SCHEMA)] * 4)
    assert backend.structured_output == "json_object"
    assert len(replies) == 4 and all(r.choices[0].text is not None for r in replies)
    styles = [b["response_format"]["type"] for b in recording.bodies]
    assert styles.count("json_object") == 4 and styles.count("json_schema") <= 4
    assert all(
        b["response_format"].get("schema") == SCHEMA
        for b in recording.bodies
        if b["response_format"]["type"] == "json_object"
    )
    for reply in replies:
        if reply.choices[0].finish_reason == "stop":
            assert_follows_tasks_schema(reply.choices[0].text or "", max_items=1)


def test_llama_cpp_server_takes_one_prompt_per_request_concurrently(llama_cpp_server: RunningServer) -> None:
    backend = backend_for(llama_cpp_server.backend_settings(max_batch=1, max_in_flight=2))
    prompts = ["The capital of France is", "1, 2, 3, 4,"]
    replies = concurrently(
        backend, [lambda b, p=p: b.complete([p], SamplingParams(max_tokens=6)) for p in prompts]
    )
    assert backend.peak_in_flight == 2
    assert all(len(r.choices) == 1 and r.choices[0].text is not None for r in replies)
