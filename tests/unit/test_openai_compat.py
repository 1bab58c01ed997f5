"""OpenAICompatBackend against httpx.MockTransport: request shapes, ordering, retries, limits. No network."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.config import LLMConfig
from app.llm import ChatMessage, LLMError, LLMRequestError, LLMUnavailableError, SamplingParams
from app.llm.openai_compat import OpenAICompatBackend

BASE = "http://llm.test/v1"
PARAMS = SamplingParams(temperature=0.7, max_tokens=64, stop=("\n\n",), seed=7)

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def make_backend(handler: Handler, **overrides: Any) -> OpenAICompatBackend:
    kwargs = {key: overrides.pop(key) for key in list(overrides) if key in ("max_batch", "structured_output")}
    config = LLMConfig(backend="openai_compat", model="m", base_url=BASE, **{"max_retries": 3, **overrides})
    return OpenAICompatBackend(
        config, transport=httpx.MockTransport(handler), backoff_initial=0.001, backoff_max=0.01, **kwargs
    )


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())


def completions_response(texts: list[str], order: list[int] | None = None, **usage: int) -> httpx.Response:
    order = order if order is not None else list(range(len(texts)))
    choices = [{"index": i, "text": texts[i], "finish_reason": "stop", "logprobs": None} for i in order]
    body = {"object": "text_completion", "choices": choices}
    if usage:
        body["usage"] = usage
    return httpx.Response(200, json=body)


def chat_response(content: str, finish_reason: str = "stop") -> httpx.Response:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": finish_reason,
    }
    usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    return httpx.Response(200, json={"object": "chat.completion", "choices": [choice], "usage": usage})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"message": message, "type": "Error", "param": None, "code": status}}
    return httpx.Response(status, json=body, headers=headers)


class Recorder:
    """Counts requests and keeps their bodies."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def body(self, i: int = -1) -> dict[str, Any]:
        return json.loads(self.requests[i].content)


# -- completions ---------------------------------------------------------------------------------------------


def test_completions_send_all_prompts_in_one_request() -> None:
    rec = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        rec.requests.append(request)
        prompts = json.loads(request.content)["prompt"]
        return completions_response([p.upper() for p in prompts], prompt_tokens=30, completion_tokens=12)

    async def go() -> list[Any]:
        async with make_backend(handler) as backend:
            return await backend.complete(["a", "bb", "ccc"], PARAMS)

    result = run(go)
    assert len(rec.requests) == 1
    request = rec.requests[0]
    assert request.method == "POST" and str(request.url) == f"{BASE}/completions"
    body = rec.body()
    assert body["prompt"] == ["a", "bb", "ccc"]
    assert body["model"] == "m" and body["n"] == 1
    assert body["max_tokens"] == 64 and body["temperature"] == 0.7 and body["stop"] == ["\n\n"]
    assert body["seed"] == 7
    assert [c.text for c in result] == ["A", "BB", "CCC"]
    assert all(c.finish_reason == "stop" for c in result)
    assert sum(c.prompt_tokens for c in result) == 30
    assert sum(c.completion_tokens for c in result) == 12


def test_completions_are_returned_in_prompt_order_when_choices_are_not() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        prompts = json.loads(request.content)["prompt"]
        return completions_response([f"out-{p}" for p in prompts], order=[2, 0, 3, 1])

    async def go() -> list[Any]:
        async with make_backend(handler) as backend:
            return await backend.complete(["p0", "p1", "p2", "p3"], PARAMS)

    assert [c.text for c in run(go)] == ["out-p0", "out-p1", "out-p2", "out-p3"]


def test_completions_split_only_beyond_max_batch() -> None:
    rec = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        rec.requests.append(request)
        prompts = json.loads(request.content)["prompt"]
        return completions_response([f"out-{p}" for p in prompts], order=list(range(len(prompts)))[::-1])

    prompts = [str(i) for i in range(7)]

    async def go() -> list[Any]:
        async with make_backend(handler, max_batch=3) as backend:
            return await backend.complete(prompts, PARAMS)

    result = run(go)
    assert sorted(len(json.loads(r.content)["prompt"]) for r in rec.requests) == [1, 3, 3]
    assert [c.text for c in result] == [f"out-{p}" for p in prompts]


def test_single_prompt_gets_exact_usage_and_empty_list_sends_nothing() -> None:
    rec = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        rec.requests.append(request)
        return completions_response(["x"], prompt_tokens=9, completion_tokens=4)

    async def go() -> tuple[list[Any], list[Any]]:
        async with make_backend(handler) as backend:
            return await backend.complete([], PARAMS), await backend.complete(["p"], PARAMS)

    empty, one = run(go)
    assert empty == [] and len(rec.requests) == 1
    assert (one[0].prompt_tokens, one[0].completion_tokens) == (9, 4)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>gateway</html>"),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, json={"choices": "nope"}),
        httpx.Response(200, json={"choices": [{"index": 0, "text": "only one"}]}),
        httpx.Response(200, json={"choices": [{"index": 0, "text": "a"}, {"index": 0, "text": "b"}]}),
        httpx.Response(200, json={"choices": [{"index": 0, "text": None}, {"index": 1, "text": "b"}]}),
    ],
)
def test_malformed_completions_body_is_a_clear_llm_error(response: httpx.Response) -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return response

    async def go() -> None:
        async with make_backend(handler) as backend:
            await backend.complete(["a", "b"], PARAMS)

    with pytest.raises(LLMError) as info:
        run(go)
    assert not isinstance(info.value, (LLMRequestError, LLMUnavailableError))
    assert f"{BASE}/completions" in str(info.value)
    assert calls == 1


# -- chat ----------------------------------------------------------------------------------------------------

SCHEMA = {
    "title": "Generated tasks",
    "type": "object",
    "properties": {"tasks": {"type": "array", "items": {"type": "string"}}},
    "required": ["tasks"],
}


def test_chat_sends_messages_and_json_schema_response_format() -> None:
    rec = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        rec.requests.append(request)
        return chat_response('{"tasks": []}')

    conversation = [ChatMessage("system", "be brief"), ChatMessage("user", "go")]

    async def go() -> list[Any]:
        async with make_backend(handler) as backend:
            return await backend.chat([conversation], PARAMS, json_schema=SCHEMA)

    [result] = run(go)
    assert str(rec.requests[0].url) == f"{BASE}/chat/completions"
    body = rec.body()
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "go"}]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Generated_tasks", "schema": SCHEMA, "strict": True},
    }
    assert result.text == '{"tasks": []}' and result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens) == (11, 5)


def test_chat_without_schema_sends_no_response_format_and_keeps_conversation_order() -> None:
    rec = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        rec.requests.append(request)
        last = json.loads(request.content)["messages"][-1]["content"]
        await asyncio.sleep(0.05 if last == "first" else 0.0)  # the first one finishes last
        return chat_response(f"re: {last}")

    async def go() -> list[Any]:
        async with make_backend(handler) as backend:
            convs = [[ChatMessage("user", text)] for text in ("first", "second", "third")]
            return await backend.chat(convs, PARAMS)

    result = run(go)
    assert [c.text for c in result] == ["re: first", "re: second", "re: third"]
    assert all("response_format" not in json.loads(r.content) for r in rec.requests)


FASTAPI_422 = httpx.Response(
    422, json={"detail": [{"loc": ["body", "response_format", "type"], "msg": "Input should be 'text'"}]}
)
# What llama-cpp-python's server (0.3.x) really answers to a json_schema response_format.
LLAMA_CPP_500 = error_response(
    500,
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
    "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}",
)


@pytest.mark.parametrize("rejection", [FASTAPI_422, LLAMA_CPP_500], ids=["422", "llama_cpp_500"])
def test_chat_falls_back_to_json_object_once_when_server_rejects_json_schema(
    rejection: httpx.Response,
) -> None:
    rec = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        rec.requests.append(request)
        fmt = json.loads(request.content)["response_format"]
        if fmt["type"] == "json_schema":
            return rejection
        return chat_response('{"tasks": ["x"]}')

    async def go() -> list[Any]:
        async with make_backend(handler) as backend:
            first = await backend.chat([[ChatMessage("user", "a")]], PARAMS, json_schema=SCHEMA)
            second = await backend.chat([[ChatMessage("user", "b")]], PARAMS, json_schema=SCHEMA)
            return first + second

    result = run(go)
    assert [c.text for c in result] == ['{"tasks": ["x"]}'] * 2
    kinds = [json.loads(r.content)["response_format"]["type"] for r in rec.requests]
    assert kinds == ["json_schema", "json_object", "json_object"]  # remembered after the first rejection
    assert rec.body()["response_format"] == {"type": "json_object", "schema": SCHEMA}


def test_strict_json_schema_mode_does_not_fall_back() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return error_response(400, "response_format json_schema is not supported")

    async def go() -> None:
        async with make_backend(handler, structured_output="json_schema") as backend:
            await backend.chat([[ChatMessage("user", "a")]], PARAMS, json_schema=SCHEMA)

    with pytest.raises(LLMRequestError, match="not supported"):
        run(go)


def test_chat_reply_without_text_is_a_clear_llm_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": None},
            "finish_reason": "tool_calls",
        }
        return httpx.Response(200, json={"choices": [choice]})

    async def go() -> None:
        async with make_backend(handler) as backend:
            await backend.chat([[ChatMessage("user", "a")]], PARAMS)

    with pytest.raises(LLMError, match="no text content"):
        run(go)


def test_api_key_is_sent_as_bearer_token() -> None:
    rec = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        rec.requests.append(request)
        return chat_response("ok")

    async def go() -> None:
        async with make_backend(handler, api_key="s3cret") as backend:
            await backend.chat([[ChatMessage("user", "a")]], PARAMS)

    run(go)
    assert rec.requests[0].headers["authorization"] == "Bearer s3cret"


# -- retries -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [500, 502, 503, 429, "connect", "read"])
def test_transient_failures_are_retried_then_succeed(failure: int | str) -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            if failure == "connect":
                raise httpx.ConnectError("connection refused", request=request)
            if failure == "read":
                raise httpx.RemoteProtocolError("server disconnected", request=request)
            assert isinstance(failure, int)
            return error_response(failure, "busy")
        return completions_response(["fine"])

    async def go() -> list[Any]:
        async with make_backend(handler) as backend:
            return await backend.complete(["p"], PARAMS)

    assert [c.text for c in run(go)] == ["fine"]
    assert calls == 3


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_are_never_retried(status: int) -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error_response(status, f"The model `m` does not exist ({status}).")

    async def go() -> None:
        async with make_backend(handler) as backend:
            await backend.complete(["p"], PARAMS)

    with pytest.raises(LLMRequestError) as info:
        run(go)
    assert calls == 1
    message = str(info.value)
    assert f"HTTP {status}" in message and "does not exist" in message and f"{BASE}/completions" in message


def test_a_500_that_is_a_validation_report_is_not_retried() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error_response(500, "1 validation error:\n {'loc': ('body', 'temperature'), 'msg': 'too big'}")

    async def go() -> None:
        async with make_backend(handler) as backend:
            await backend.complete(["p"], PARAMS)

    with pytest.raises(LLMRequestError, match="temperature"):
        run(go)
    assert calls == 1


def test_exhausted_retries_raise_unavailable_naming_url_and_cause() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error_response(503, "model is loading")

    async def go() -> None:
        async with make_backend(handler, max_retries=2) as backend:
            await backend.complete(["p"], PARAMS)

    with pytest.raises(LLMUnavailableError) as info:
        run(go)
    assert calls == 3
    message = str(info.value)
    assert f"{BASE}/completions" in message and "3 attempt" in message
    assert "HTTP 503" in message and "model is loading" in message


def test_connection_refused_everywhere_is_unavailable() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    async def go() -> None:
        async with make_backend(handler, max_retries=1) as backend:
            await backend.chat([[ChatMessage("user", "a")]], PARAMS)

    with pytest.raises(LLMUnavailableError, match="Connection refused"):
        run(go)


def test_a_base_url_without_scheme_fails_at_once() -> None:
    config = LLMConfig(backend="openai_compat", base_url="localhost:8000/v1", max_retries=5)

    async def go() -> None:
        async with OpenAICompatBackend(config, backoff_initial=5.0) as backend:
            await backend.complete(["p"], PARAMS)

    started = time.monotonic()
    with pytest.raises(LLMUnavailableError, match="invalid LLM server URL 'localhost:8000/v1/completions'"):
        run(go)
    assert time.monotonic() - started < 1


def test_retry_after_header_is_honoured() -> None:
    times: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        if len(times) == 1:
            return error_response(429, "slow down", headers={"Retry-After": "0.2"})
        return completions_response(["ok"])

    async def go() -> list[Any]:
        async with make_backend(handler) as backend:
            return await backend.complete(["p"], PARAMS)

    run(go)
    assert times[1] - times[0] >= 0.19  # the backoff alone would be at most 0.01 s


def test_timeout_is_retried_then_reported() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(5)
        return completions_response(["too late"])

    async def go() -> None:
        async with make_backend(handler, timeout=0.05, max_retries=1) as backend:
            await backend.complete(["p"], PARAMS)

    started = time.monotonic()
    with pytest.raises(LLMUnavailableError, match="no response within 0.05 s"):
        run(go)
    assert calls == 2
    assert time.monotonic() - started < 2


def test_one_failing_conversation_fails_the_call_and_cancels_the_rest() -> None:
    finished: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        last = json.loads(request.content)["messages"][-1]["content"]
        if last == "bad":
            return error_response(400, "bad request")
        await asyncio.sleep(0.5)
        finished.append(last)
        return chat_response("ok")

    async def go() -> None:
        async with make_backend(handler) as backend:
            convs = [[ChatMessage("user", t)] for t in ("slow1", "bad", "slow2")]
            await backend.chat(convs, PARAMS)

    started = time.monotonic()
    with pytest.raises(LLMRequestError, match="bad request"):
        run(go)
    assert finished == [] and time.monotonic() - started < 0.4


# -- concurrency ---------------------------------------------------------------------------------------------


def test_concurrency_limit_is_respected() -> None:
    in_flight = peak = calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak, calls
        calls += 1
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return chat_response("ok")

    async def go() -> list[Any]:
        async with make_backend(handler, max_concurrency=3) as backend:
            return await backend.chat([[ChatMessage("user", str(i))] for i in range(12)], PARAMS)

    assert len(run(go)) == 12
    assert calls == 12 and peak == 3


# -- models and health ---------------------------------------------------------------------------------------


def test_list_models_and_health() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET" and str(request.url) == f"{BASE}/models"
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def go() -> tuple[list[str], dict[str, Any]]:
        async with make_backend(handler) as backend:
            return await backend.list_models(), await backend.health()

    models, health = run(go)
    assert models == ["m"]
    assert health["ok"] is True and health["models"] == ["m"]


def test_health_reports_a_down_server_without_retrying() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("Connection refused", request=request)

    async def go() -> dict[str, Any]:
        async with make_backend(handler) as backend:
            return await backend.health()

    health = run(go)
    assert health["ok"] is False and "Connection refused" in health["error"] and calls == 1
