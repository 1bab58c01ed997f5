"""OpenAICompatBackend (the official openai SDK underneath) against a mock transport: request shapes, ordering,
error classes, retries, structured-output fallback under concurrency, limits. No network."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import pytest

from app.core.config import BackendSettings
from app.llm import ChatMessage, LLMFatalError, LLMRequestError, LLMUnavailableError, SamplingParams
from app.llm.openai_compat import OpenAICompatBackend, ServerRejectedError

BASE = "http://llm.test/v1"
PARAMS = SamplingParams(temperature=0.7, max_tokens=64, stop=("\n\n",), seed=7)
MESSAGES = [ChatMessage("system", "be brief"), ChatMessage("user", "hi")]
SCHEMA = {"title": "Tasks list", "type": "object", "properties": {"tasks": {"type": "array"}}}

Handler = Callable[[httpx2.Request], Awaitable[httpx2.Response]]


def make_backend(handler: Handler, **overrides: Any) -> OpenAICompatBackend:
    settings = BackendSettings(
        kind="openai", model="m", base_url=BASE, **{"max_retries": 3, "backoff_max": 0.01, **overrides}
    )
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    return OpenAICompatBackend("test", settings, http_client=client, backoff_initial=0.001)


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())


def completions_response(texts: list[str], order: list[int] | None = None, **usage: int) -> httpx2.Response:
    order = order if order is not None else list(range(len(texts)))
    choices = [{"index": i, "text": texts[i], "finish_reason": "stop", "logprobs": None} for i in order]
    body: dict[str, Any] = {
        "id": "c",
        "object": "text_completion",
        "created": 0,
        "model": "m",
        "choices": choices,
    }
    if usage:
        body["usage"] = {**usage, "total_tokens": sum(usage.values())}
    return httpx2.Response(200, json=body)


def chat_response(contents: list[str | None], finish_reason: str = "stop") -> httpx2.Response:
    choices = [
        {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": finish_reason}
        for i, c in enumerate(contents)
    ]
    usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    return httpx2.Response(
        200,
        json={
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": choices,
            "usage": usage,
        },
    )


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    body = {"error": {"message": message, "type": "Error", "param": None, "code": status}}
    return httpx2.Response(status, json=body, headers=headers)


class Recorder:
    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []

    def body(self, i: int = -1) -> dict[str, Any]:
        return json.loads(self.requests[i].content)


# -- completions ---------------------------------------------------------------------------------------------


def test_completions_send_every_prompt_in_one_request_with_the_sampling() -> None:
    rec = Recorder()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        rec.requests.append(request)
        prompts = json.loads(request.content)["prompt"]
        return completions_response([p.upper() for p in prompts], prompt_tokens=30, completion_tokens=12)

    async def go() -> Any:
        backend = make_backend(handler, extra_body={"min_tokens": 5})
        try:
            return await backend.complete(["a", "b", "c"], PARAMS)
        finally:
            await backend.aclose()

    reply = run(go)
    assert [c.text for c in reply.choices] == ["A", "B", "C"]
    assert [c.prompt_index for c in reply.choices] == [0, 1, 2]
    assert (reply.prompt_tokens, reply.completion_tokens) == (30, 12)
    assert len(rec.requests) == 1 and rec.requests[0].url.path == "/v1/completions"
    body = rec.body()
    assert body["prompt"] == ["a", "b", "c"] and body["model"] == "m" and body["n"] == 1
    assert body["stop"] == ["\n\n"] and body["seed"] == 7 and body["max_tokens"] == 64
    assert body["min_tokens"] == 5  # extra_body from the backend's settings


def test_completions_with_n_map_choices_back_to_their_prompts_in_any_order() -> None:
    async def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        texts = [f"{p}-{j}" for p in body["prompt"] for j in range(body["n"])]
        return completions_response(texts, order=[3, 1, 0, 2])

    async def go() -> Any:
        backend = make_backend(handler)
        try:
            return await backend.complete(["x", "y"], SamplingParams(n=2))
        finally:
            await backend.aclose()

    reply = run(go)
    assert [(c.prompt_index, c.text) for c in reply.choices] == [
        (0, "x-0"),
        (0, "x-1"),
        (1, "y-0"),
        (1, "y-1"),
    ]


def test_completions_with_missing_choices_are_a_request_error() -> None:
    async def handler(request: httpx2.Request) -> httpx2.Response:
        return completions_response(["only one"])

    async def go() -> None:
        backend = make_backend(handler)
        try:
            await backend.complete(["a", "b"], PARAMS)
        finally:
            await backend.aclose()

    with pytest.raises(LLMRequestError, match="choices"):
        run(go)


def test_more_prompts_than_max_batch_is_a_programming_error() -> None:
    async def go() -> None:
        backend = make_backend(lambda r: completions_response([]), max_batch=2)  # type: ignore[arg-type,return-value]
        try:
            await backend.complete(["a", "b", "c"], PARAMS)
        finally:
            await backend.aclose()

    with pytest.raises(ValueError, match="at most 2"):
        run(go)


# -- chat ----------------------------------------------------------------------------------------------------


def test_chat_sends_messages_n_and_a_json_schema_response_format() -> None:
    rec = Recorder()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        rec.requests.append(request)
        return chat_response(['{"tasks": []}', '{"tasks": [1]}'])

    async def go() -> Any:
        backend = make_backend(handler)
        try:
            return await backend.chat(MESSAGES, SamplingParams(n=2), json_schema=SCHEMA)
        finally:
            await backend.aclose()

    reply = run(go)
    assert [c.text for c in reply.choices] == ['{"tasks": []}', '{"tasks": [1]}']
    body = rec.body()
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert body["n"] == 2
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Tasks_list", "schema": SCHEMA, "strict": True},
    }


def test_chat_content_null_is_a_choice_without_text_not_an_exception() -> None:
    async def handler(request: httpx2.Request) -> httpx2.Response:
        return chat_response([None])

    async def go() -> Any:
        backend = make_backend(handler)
        try:
            return await backend.chat(MESSAGES, PARAMS)
        finally:
            await backend.aclose()

    reply = run(go)
    assert reply.choices[0].text is None


def _rejects_json_schema(request: httpx2.Request) -> bool:
    return json.loads(request.content).get("response_format", {}).get("type") == "json_schema"


def test_concurrent_chats_all_fall_back_to_json_object_when_json_schema_is_rejected() -> None:
    """The llama-cpp-python server case: every request already in flight with json_schema gets the rejection;
    each is re-sent with json_object (not only the first), and later requests use json_object directly."""
    rec = Recorder()
    started = asyncio.Event()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        rec.requests.append(request)
        if _rejects_json_schema(request):
            await asyncio.sleep(0.01)  # let all of them be in flight before any rejection
            return httpx2.Response(
                500,
                json={
                    "detail": "1 validation error: {'type': 'literal_error', 'loc': ('body', 'response_format', 'type')}"
                },
            )
        started.set()
        return chat_response(['{"tasks": []}'])

    async def go() -> list[Any]:
        backend = make_backend(handler)
        try:
            replies = await asyncio.gather(
                *(backend.chat(MESSAGES, PARAMS, json_schema=SCHEMA) for _ in range(6))
            )
            later = await backend.chat(MESSAGES, PARAMS, json_schema=SCHEMA)
            assert backend.structured_output == "json_object"
            return [*replies, later]
        finally:
            await backend.aclose()

    replies = run(go)
    assert all(r.choices[0].text == '{"tasks": []}' for r in replies)
    styles = [json.loads(r.content)["response_format"]["type"] for r in rec.requests]
    assert styles.count("json_schema") == 6  # each in-flight request was rejected once, never retried as such
    assert styles.count("json_object") == 7
    assert json.loads(rec.requests[-1].content)["response_format"] == {
        "type": "json_object",
        "schema": SCHEMA,
    }


def test_a_backend_configured_for_json_schema_does_not_fall_back() -> None:
    async def handler(request: httpx2.Request) -> httpx2.Response:
        return error_response(400, "response_format json_schema is not supported")

    async def go() -> None:
        backend = make_backend(handler, structured_output="json_schema")
        try:
            await backend.chat(MESSAGES, PARAMS, json_schema=SCHEMA)
        finally:
            await backend.aclose()

    with pytest.raises(ServerRejectedError, match="HTTP 400"):
        run(go)


# -- credentials ---------------------------------------------------------------------------------------------


def test_the_configured_key_is_the_only_credential_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-env")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-env")
    rec = Recorder()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        rec.requests.append(request)
        return chat_response(["ok"])

    async def go(**settings: Any) -> None:
        backend = make_backend(handler, **settings)
        try:
            await backend.chat(MESSAGES, PARAMS)
        finally:
            await backend.aclose()

    run(lambda: go(api_key="sk-configured"))
    run(lambda: go())
    with_key, without_key = rec.requests
    assert with_key.headers["authorization"] == "Bearer sk-configured"
    assert "authorization" not in without_key.headers
    for request in rec.requests:
        assert "openai-organization" not in request.headers and "openai-project" not in request.headers
        assert "sk-from-the-environment" not in str(request.headers)


# -- errors and retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [429, 500, 502, 503, 408, 409, "connect", "read-timeout"])
def test_transient_failures_are_retried_then_succeed(failure: int | str) -> None:
    calls = 0

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            if failure == "connect":
                raise httpx2.ConnectError("refused", request=request)
            if failure == "read-timeout":
                raise httpx2.ReadTimeout("slow", request=request)
            return error_response(int(failure), "busy")
        return chat_response(["fine"])

    async def go() -> Any:
        backend = make_backend(handler)
        try:
            return await backend.chat(MESSAGES, PARAMS)
        finally:
            await backend.aclose()

    assert run(go).choices[0].text == "fine"
    assert calls == 3


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, LLMRequestError),
        (422, LLMRequestError),
        (413, LLMRequestError),
        (401, LLMFatalError),
        (403, LLMFatalError),
        (404, LLMFatalError),
    ],
)
def test_client_errors_are_never_retried_and_sorted_by_what_can_fix_them(
    status: int, error: type[Exception]
) -> None:
    calls = 0

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        return error_response(status, f"the server's own words {status}")

    async def go() -> None:
        backend = make_backend(handler)
        try:
            await backend.chat(MESSAGES, PARAMS)
        finally:
            await backend.aclose()

    with pytest.raises(error, match=f"the server's own words {status}") as caught:
        run(go)
    assert calls == 1
    if status in (401, 403, 404):
        assert not isinstance(caught.value, LLMRequestError)  # fatal: the job fails at once


def test_a_500_that_is_a_validation_report_is_a_rejection_not_a_retry() -> None:
    calls = 0

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        return httpx2.Response(500, json={"detail": "2 validation errors: {'loc': ('body', 'prompt')}"})

    async def go() -> None:
        backend = make_backend(handler)
        try:
            await backend.complete(["a"], PARAMS)
        finally:
            await backend.aclose()

    with pytest.raises(ServerRejectedError, match="validation error"):
        run(go)
    assert calls == 1


def test_exhausted_retries_raise_unavailable_naming_the_server_and_the_cause() -> None:
    async def handler(request: httpx2.Request) -> httpx2.Response:
        return error_response(503, "overloaded")

    async def go() -> None:
        backend = make_backend(handler, max_retries=2)
        try:
            await backend.chat(MESSAGES, PARAMS)
        finally:
            await backend.aclose()

    with pytest.raises(LLMUnavailableError, match=r"llm\.test.*3 attempt.*503.*overloaded"):
        run(go)


def test_retry_after_is_honoured() -> None:
    times: list[float] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        times.append(time.monotonic())
        if len(times) == 1:
            return error_response(429, "slow down", headers={"retry-after": "0.3"})
        return chat_response(["ok"])

    async def go() -> None:
        backend = make_backend(handler, backoff_max=5.0)
        try:
            await backend.chat(MESSAGES, PARAMS)
        finally:
            await backend.aclose()

    run(go)
    assert times[1] - times[0] >= 0.29


def test_a_request_that_outlives_the_timeout_is_retried_then_unavailable() -> None:
    calls = 0

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(1.0)
        return chat_response(["late"])

    async def go() -> None:
        backend = make_backend(handler, timeout=0.05, max_retries=1)
        try:
            await backend.chat(MESSAGES, PARAMS)
        finally:
            await backend.aclose()

    started = time.monotonic()
    with pytest.raises(LLMUnavailableError):
        run(go)
    assert calls == 2 and time.monotonic() - started < 0.9


# -- limits and health ---------------------------------------------------------------------------------------


def test_sequences_in_flight_never_exceed_the_backend_limit() -> None:
    in_flight = peak = 0

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal in_flight, peak
        n = json.loads(request.content)["n"]
        in_flight += n
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= n
        return chat_response(["ok"] * n)

    async def go() -> None:
        backend = make_backend(handler, max_in_flight=6)
        try:
            await asyncio.gather(*(backend.chat(MESSAGES, SamplingParams(n=2)) for _ in range(12)))
        finally:
            await backend.aclose()

    run(go)
    assert peak == 6


def test_health_checks_the_model_is_served_without_retrying() -> None:
    calls = 0

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        return httpx2.Response(
            200,
            json={
                "object": "list",
                "data": [{"id": "other", "object": "model", "created": 0, "owned_by": "x"}],
            },
        )

    async def go() -> dict[str, Any]:
        backend = make_backend(handler)
        try:
            return await backend.health()
        finally:
            await backend.aclose()

    result = run(go)
    assert result["ok"] is False and "not served" in result["error"] and calls == 1
