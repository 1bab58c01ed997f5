"""Any OpenAI-compatible HTTP server, first of all vLLM's.

Throughput comes from the server, so this client's job is to keep it busy without drowning it: completions
send the whole prompt list in one request (vLLM batches it), chat conversations run concurrently, and a
semaphore caps the requests in flight. Failures are sorted once, here: connection errors, timeouts, 429 and
5xx are retried with jittered exponential backoff (a restarting or overloaded server recovers); any other
4xx is the request's fault and is raised at once, with the server's own message.

Structured output: the OpenAI / vLLM form `{"type": "json_schema", "json_schema": {...}}` is sent first.
Servers that only know llama-cpp-python's `{"type": "json_object", "schema": ...}` reject it with an error
naming response_format (llama-cpp-python's own server answers HTTP 500 with a request-validation report, which
is therefore treated as a rejection, not retried). With `structured_output="auto"` (the default) the backend
then switches to that form for the rest of its life, so neither kind of server needs a setting.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from app.config import LLMConfig
from app.llm.base import (
    BackendInfo,
    ChatMessage,
    Completion,
    LLMError,
    LLMRequestError,
    LLMUnavailableError,
    SamplingParams,
)

log = logging.getLogger(__name__)

StructuredOutput = Literal["auto", "json_schema", "json_object"]
T = TypeVar("T")

_MAX_ERROR_CHARS = 500


class _RetryableError(Exception):
    """One failed attempt that another attempt may fix; `cause` ends up in the final error message."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


class ServerRejectedError(LLMRequestError):
    """The server refused the request (a 4xx, or a 5xx that is a request-validation report). Keeps the status
    and the server's own message so callers (and the json_object fallback) can tell cases apart."""

    def __init__(self, message: str, *, status_code: int, server_message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.server_message = server_message


class OpenAICompatBackend:
    """LLMBackend over an OpenAI-compatible HTTP API (vLLM, llama.cpp servers, hosted APIs).

    Use it inside one event loop (its client and semaphore belong to the loop that first uses them); close it
    with `aclose()` or `async with`.
    """

    def __init__(
        self,
        config: LLMConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 60.0,
        max_batch: int = 256,
        structured_output: StructuredOutput = "auto",
    ) -> None:
        """`transport` is for tests (httpx.MockTransport); the backoff knobs let tests retry in milliseconds.

        max_batch: prompts per /completions request; longer lists are split and the parts sent concurrently.
        """
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self.info = BackendInfo(
            backend="openai_compat",
            model=config.model,
            details={
                "base_url": self.base_url,
                "mode": config.mode,
                "max_concurrency": config.max_concurrency,
                "max_batch": max_batch,
            },
        )
        self._timeout = config.timeout
        self._attempts = config.max_retries + 1
        self._backoff = wait_random_exponential(multiplier=backoff_initial, max=backoff_max)
        self._retry_after_max = retry_after_max
        self._max_batch = max_batch
        self._structured: StructuredOutput = structured_output
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        headers = {"Accept": "application/json", "User-Agent": "sprout-llm/0.1"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._client = httpx.AsyncClient(
            transport=transport,
            headers=headers,
            timeout=httpx.Timeout(config.timeout),
            limits=httpx.Limits(
                max_connections=config.max_concurrency, max_keepalive_connections=config.max_concurrency
            ),
        )

    # -- the LLMBackend protocol -----------------------------------------------------------------------------

    async def complete(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        """All prompts in one /completions request (split only beyond max_batch); results in prompt order.

        The server reports token usage per request, not per prompt: a single-prompt request gets exact counts,
        a batch gets the totals shared out by text length (sums stay exact, single items are estimates).
        """
        prompts = list(prompts)
        if not prompts:
            return []
        chunks = [prompts[i : i + self._max_batch] for i in range(0, len(prompts), self._max_batch)]
        parts = await _gather_or_cancel([self._complete_chunk(chunk, params) for chunk in chunks])
        return [completion for part in parts for completion in part]

    async def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        params: SamplingParams,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Completion]:
        """One request per conversation, all in flight at once (the semaphore keeps the limit)."""
        return await _gather_or_cancel([self._chat_one(conv, params, json_schema) for conv in conversations])

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def structured_output(self) -> StructuredOutput:
        """The response_format style in use; "auto" until a server has rejected json_schema."""
        return self._structured

    # -- extras ----------------------------------------------------------------------------------------------

    async def list_models(self) -> list[str]:
        """The model ids the server serves (GET /models), with the usual retries."""
        data = await self._request("GET", "/models")
        models = data.get("data")
        if not isinstance(models, list) or not all(isinstance(m, dict) and "id" in m for m in models):
            raise LLMError(f"malformed /models response from {self._url('/models')}: {_preview(data)}")
        return [str(m["id"]) for m in models]

    async def health(self) -> dict[str, Any]:
        """One quick look (no retries) for a status page: is the server up and does it serve our model?"""
        url = self._url("/models")
        started = time.perf_counter()
        result: dict[str, Any] = {"ok": False, "backend": "openai_compat", "base_url": self.base_url}
        result["model"] = self.config.model
        try:
            data = await self._send_once("GET", url, None)
            models = data.get("data")
            ids = (
                [str(m.get("id")) for m in models if isinstance(m, dict)] if isinstance(models, list) else []
            )
            result["models"] = ids
            result["ok"] = self.config.model in ids
            if not result["ok"]:
                result["error"] = (
                    f"model {self.config.model!r} not served (served: {', '.join(ids) or 'none'})"
                )
        except _RetryableError as exc:
            result["error"] = exc.cause
        except LLMError as exc:
            result["error"] = str(exc)
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return result

    # -- completions -----------------------------------------------------------------------------------------

    async def _complete_chunk(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        body = {"model": self.config.model, "prompt": prompts, "n": 1, **_sampling_body(params)}
        data = await self._request("POST", "/completions", body)
        choices = _choices(data, self._url("/completions"))
        if len(choices) != len(prompts):
            raise LLMError(
                f"{self._url('/completions')} returned {len(choices)} choices for {len(prompts)} prompts"
            )
        ordered = _order_by_index(choices, self._url("/completions"))
        texts: list[str] = []
        for choice in ordered:
            text = choice.get("text")
            if not isinstance(text, str):
                raise LLMError(f"malformed choice from {self._url('/completions')}: {_preview(choice)}")
            texts.append(text)
        prompt_total, completion_total = _usage(data)
        prompt_shares = _share(prompt_total, [len(p) for p in prompts])
        completion_shares = _share(completion_total, [len(t) for t in texts])
        return [
            Completion(
                text=text,
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=p_tokens,
                completion_tokens=c_tokens,
            )
            for text, choice, p_tokens, c_tokens in zip(
                texts, ordered, prompt_shares, completion_shares, strict=True
            )
        ]

    # -- chat ------------------------------------------------------------------------------------------------

    async def _chat_one(
        self, conversation: Sequence[ChatMessage], params: SamplingParams, json_schema: dict[str, Any] | None
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [{"role": m.role, "content": m.content} for m in conversation],
            "n": 1,
            **_sampling_body(params),
        }
        if json_schema is None:
            data = await self._request("POST", "/chat/completions", body)
        else:
            data = await self._chat_structured(body, json_schema)
        url = self._url("/chat/completions")
        choices = _choices(data, url)
        if len(choices) != 1:
            raise LLMError(f"{url} returned {len(choices)} choices for one conversation")
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise LLMError(f"malformed chat choice from {url} (no text content): {_preview(choices[0])}")
        prompt_tokens, completion_tokens = _usage(data)
        return Completion(
            text=content,
            finish_reason=choices[0].get("finish_reason"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    async def _chat_structured(self, body: dict[str, Any], json_schema: dict[str, Any]) -> dict[str, Any]:
        style = "json_object" if self._structured == "json_object" else "json_schema"
        try:
            return await self._request("POST", "/chat/completions", _with_format(body, json_schema, style))
        except ServerRejectedError as exc:
            if not (self._structured == "auto" and style == "json_schema" and _rejects_format(exc)):
                raise
            log.warning(
                "%s does not accept response_format json_schema (%s); using json_object with a schema",
                self.base_url,
                exc.server_message,
            )
            self._structured = "json_object"
            return await self._request(
                "POST", "/chat/completions", _with_format(body, json_schema, "json_object")
            )

    # -- HTTP with retries -----------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self._url(path)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_RetryableError),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send_once(method, url, body)
        except _RetryableError as exc:
            raise LLMUnavailableError(
                f"LLM server {method} {url} failed after {self._attempts} attempt(s): {exc.cause}"
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def _send_once(self, method: str, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One HTTP exchange under the concurrency limit, its outcome sorted into retry / refuse / parse."""
        async with self._semaphore:
            try:
                # httpx times each phase (connect, each read); this bounds the whole exchange.
                async with asyncio.timeout(self._timeout):
                    response = await self._client.request(method, url, json=body)
            except (TimeoutError, httpx.TimeoutException):
                raise _RetryableError(f"no response within {self._timeout:g} s") from None
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:  # a bad base_url: no retry can help
                raise LLMUnavailableError(f"invalid LLM server URL {url!r}: {exc}") from exc
            except httpx.TransportError as exc:
                raise _RetryableError(f"{type(exc).__name__}: {exc or 'connection failed'}") from exc
        status = response.status_code
        if status >= 400:
            server_message = _error_message(response)
            if (status == 429 or status >= 500) and not _is_validation_report(server_message):
                raise _RetryableError(f"HTTP {status}: {server_message}", retry_after=_retry_after(response))
            raise ServerRejectedError(
                f"LLM server rejected {method} {url} (HTTP {status}): {server_message}",
                status_code=status,
                server_message=server_message,
            )
        if status != 200:
            raise LLMError(f"unexpected HTTP {status} from {method} {url}")
        try:
            data = response.json()
        except ValueError:
            raise LLMError(
                f"LLM server {url} returned a body that is not JSON: {response.text[:200]!r}"
            ) from None
        if not isinstance(data, dict):
            raise LLMError(f"LLM server {url} returned JSON that is not an object: {_preview(data)}")
        return data

    def _wait(self, retry_state: RetryCallState) -> float:
        """Jittered exponential backoff, stretched to the server's Retry-After when it sends one."""
        backoff = float(self._backoff(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _RetryableError) and exc.retry_after is not None:
            return min(max(backoff, exc.retry_after), self._retry_after_max)
        return backoff

    def _log_retry(self, retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning(
            "LLM request to %s failed (attempt %d/%d): %s; retrying in %.2f s",
            self.base_url,
            retry_state.attempt_number,
            self._attempts,
            getattr(exc, "cause", exc),
            sleep,
        )


# -- helpers (pure functions on request / response data) -----------------------------------------------------


def _sampling_body(params: SamplingParams) -> dict[str, Any]:
    body: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    if params.stop:  # some servers reject an empty list
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    return body


def _with_format(body: dict[str, Any], schema: dict[str, Any], style: str) -> dict[str, Any]:
    if style == "json_object":  # llama-cpp-python's server (and Anyscale's original JSON mode)
        response_format: dict[str, Any] = {"type": "json_object", "schema": schema}
    else:  # OpenAI and vLLM
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": _schema_name(schema), "schema": schema, "strict": True},
        }
    return {**body, "response_format": response_format}


def _schema_name(schema: dict[str, Any]) -> str:
    """OpenAI requires a name of [a-zA-Z0-9_-]{1,64}; the schema's title is the natural one."""
    title = schema.get("title")
    name = re.sub(r"[^a-zA-Z0-9_-]+", "_", title).strip("_")[:64] if isinstance(title, str) else ""
    return name or "response"


def _rejects_format(exc: ServerRejectedError) -> bool:
    text = exc.server_message.lower()
    return "response_format" in text or "json_schema" in text


_VALIDATION_REPORT = re.compile(r"\b\d+ validation errors?\b.*'body'", re.DOTALL)


def _is_validation_report(message: str) -> bool:
    """llama-cpp-python's server answers an invalid request body with HTTP 500 and pydantic's report
    ("1 validation error: {... 'loc': ('body', ...)}"). That is the request's fault: retrying cannot help."""
    return bool(_VALIDATION_REPORT.search(message))


def _choices(data: dict[str, Any], url: str) -> list[dict[str, Any]]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise LLMError(f"malformed response from {url}: no list of choices in {_preview(data)}")
    return choices


def _order_by_index(choices: list[dict[str, Any]], url: str) -> list[dict[str, Any]]:
    """Choices carry their prompt's position in "index" and may come in any order; no index means order."""
    indices = [c.get("index") for c in choices]
    if all(i is None for i in indices):
        return choices
    if sorted(i for i in indices if isinstance(i, int)) != list(range(len(choices))):
        raise LLMError(
            f"{url} returned choices with indices {indices}, expected each of 0..{len(choices) - 1}"
        )
    return sorted(choices, key=lambda c: c["index"])


def _usage(data: dict[str, Any]) -> tuple[int, int]:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    return _as_int(usage.get("prompt_tokens")), _as_int(usage.get("completion_tokens"))


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _share(total: int, weights: list[int]) -> list[int]:
    """Split an integer total in proportion to weights; the parts always sum to the total."""
    if len(weights) == 1:
        return [total]
    weight_sum = sum(weights)
    if weight_sum == 0:
        weights, weight_sum = [1] * len(weights), len(weights)
    parts = [total * w // weight_sum for w in weights]
    parts[-1] += total - sum(parts)
    return parts


def _error_message(response: httpx.Response) -> str:
    """The server's words: OpenAI's {"error": {"message"}}, old vLLM's {"message"}, FastAPI's {"detail"}."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:_MAX_ERROR_CHARS] or response.reason_phrase
    message: Any = data
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and "message" in error:
            message = error["message"]
        elif isinstance(error, str):
            message = error
        elif "message" in data:
            message = data["message"]
        elif "detail" in data:
            message = _fastapi_detail(data["detail"])
    return str(message)[:_MAX_ERROR_CHARS]


def _fastapi_detail(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", item)))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _preview(value: Any) -> str:
    return repr(value)[:200]


async def _gather_or_cancel(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Like gather, but the first failure cancels the rest (no orphan requests) and is raised as itself."""
    if len(coros) == 1:
        return [await coros[0]]
    failure: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coro) for coro in coros]
    except BaseExceptionGroup as failed:
        failure = _first_leaf(failed)
    if failure is not None:
        raise failure  # outside the except block, so the error keeps its own cause chain
    return [task.result() for task in tasks]


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
