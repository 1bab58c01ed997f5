"""Any OpenAI-compatible HTTP server, first of all vLLM's, through the official `openai` SDK.

The SDK does the HTTP; Sprout keeps what is its own:
- Retries are tenacity's, with jittered exponential backoff stretched to a Retry-After, on connection errors,
  timeouts, 408, 409, 429 and 5xx; the SDK's own retries are off so that there is one policy, in one place.
  401/403 (credentials) and 404 (an unknown model or a wrong base URL) are fatal: no request can succeed.
  Any other 4xx is this request's fault and is raised at once with the server's own message.
- A `SequenceLimiter` caps the sequences (prompts x n) in flight over every job using the backend.
- Structured output: the OpenAI / vLLM form `{"type": "json_schema", ...}` is sent first. Servers that only
  know llama-cpp-python's `{"type": "json_object", "schema": ...}` reject it (llama-cpp-python's own server
  with HTTP 500 and a request-validation report, which is therefore a rejection, not a retry). In `auto`
  mode the backend then uses json_object for the rest of its life; requests that were already in flight
  with json_schema when the first rejection came are simply re-sent with json_object.
- A list of prompts goes in one /v1/completions request (vLLM batches it); choices come back in any order and
  are put back in prompt order by their index.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx2  # the openai SDK's HTTP library
import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from app.core.config import BackendSettings
from app.llm.base import (
    BackendInfo,
    ChatMessage,
    Choice,
    LLMError,
    LLMFatalError,
    LLMRequestError,
    LLMUnavailableError,
    Reply,
    SamplingParams,
)
from app.llm.limits import SequenceLimiter

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 500
_TRANSIENT_STATUSES = frozenset({408, 409, 429})


class ServerRejectedError(LLMRequestError):
    """The server refused the request. Keeps the status and the server's own words, so callers (and the
    json_object fallback) can tell cases apart."""

    def __init__(self, message: str, *, status_code: int, server_message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.server_message = server_message


class OpenAICompatBackend:
    """LLMBackend over an OpenAI-compatible API. Use it inside one event loop; close it with `aclose()`."""

    def __init__(
        self,
        name: str,
        settings: BackendSettings,
        *,
        http_client: Any = None,
        backoff_initial: float = 0.5,
    ) -> None:
        """`http_client` (an SDK-compatible async HTTP client) is for tests and benchmarks: a mock transport, a
        request recorder. `backoff_initial` lets tests retry in milliseconds."""
        assert settings.base_url is not None  # checked by BackendSettings
        self.settings = settings
        self.base_url = settings.base_url
        self.info = BackendInfo(
            name=name,
            kind="openai",
            model=settings.model,
            mode=settings.mode,
            max_in_flight=settings.in_flight,
            max_batch=settings.max_batch,
            details={"base_url": self.base_url},
        )
        self._attempts = settings.max_retries + 1
        self._backoff = wait_random_exponential(multiplier=backoff_initial, max=settings.backoff_max)
        self._limiter = SequenceLimiter(settings.in_flight)
        self._configured_format = settings.structured_output
        self._format = "json_object" if settings.structured_output == "json_object" else "json_schema"
        key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        # Nothing is taken from the process environment (OPENAI_API_KEY, OPENAI_ORG_ID, ...): this server gets
        # the key configured for it, or no Authorization header at all.
        headers: dict[str, Any] = {"OpenAI-Organization": openai.omit, "OpenAI-Project": openai.omit}
        # Without a key, the SDK wants to be told per request that no Authorization header is intended.
        self._extra_headers: dict[str, Any] = {} if key else {"Authorization": openai.omit}
        self._client = openai.AsyncOpenAI(
            api_key=key,
            admin_api_key="",
            base_url=self.base_url,
            timeout=settings.timeout,
            max_retries=0,
            default_headers=headers,
            http_client=http_client
            or openai.DefaultAsyncHttpxClient(
                limits=_limits(settings.in_flight), timeout=settings.timeout, trust_env=False
            ),
        )

    # -- the LLMBackend protocol -----------------------------------------------------------------------------

    async def complete(self, prompts: Sequence[str], params: SamplingParams) -> Reply:
        prompts = list(prompts)
        if not prompts:
            return Reply(choices=[])
        if len(prompts) > self.info.max_batch:
            raise ValueError(
                f"{len(prompts)} prompts in one request; this backend takes at most {self.info.max_batch}"
            )
        async with self._limiter.hold(len(prompts) * params.n):
            body = {
                "model": params.model or self.settings.model,
                "prompt": prompts,
                **_sampling(params),
                **self.settings.extra_body,
            }
            data = await self._call(lambda: self._post("/completions", body))
        url = f"{self.base_url}/completions"
        choices = _choices(data, url, expected=len(prompts) * params.n)
        return Reply(
            choices=[
                Choice(
                    text=_text(c.get("text")),
                    finish_reason=c.get("finish_reason"),
                    prompt_index=c["index"] // params.n,
                )
                for c in choices
            ],
            **_usage(data),
        )

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        json_schema: dict[str, Any] | None = None,
    ) -> Reply:
        body_messages = [{"role": m.role, "content": m.content} for m in messages]

        def send(style: str | None) -> Callable[[], Awaitable[Any]]:
            body: dict[str, Any] = {
                "model": params.model or self.settings.model,
                "messages": body_messages,
                **_sampling(params),
            }
            if style is not None:
                body["response_format"] = _response_format(json_schema or {}, style)
            body.update(self.settings.extra_body)
            return lambda: self._post("/chat/completions", body)

        async with self._limiter.hold(params.n):
            if json_schema is None:
                data = await self._call(send(None))
            else:
                style = self._format
                try:
                    data = await self._call(send(style))
                except ServerRejectedError as exc:
                    if not (
                        style == "json_schema" and self._configured_format == "auto" and _rejects_format(exc)
                    ):
                        raise
                    if self._format != "json_object":
                        log.warning(
                            "%s does not accept response_format json_schema (%s); using json_object with a schema",
                            self.base_url,
                            exc.server_message,
                        )
                        self._format = "json_object"
                    data = await self._call(send("json_object"))
        choices = _choices(data, f"{self.base_url}/chat/completions", expected=params.n)
        return Reply(
            choices=[
                Choice(
                    text=_text((c.get("message") or {}).get("content")), finish_reason=c.get("finish_reason")
                )
                for c in choices
            ],
            **_usage(data),
        )

    async def health(self) -> dict[str, Any]:
        """One quick look (no retries): is the server up, and does it serve our model?"""
        started = time.perf_counter()
        result: dict[str, Any] = {"ok": False, "kind": "openai", "model": self.settings.model}
        try:
            async with asyncio.timeout(10):
                page = await self._client.models.list(extra_headers=self._extra_headers)
            served = [m.id for m in page.data]
            result["ok"] = self.settings.model in served
            if not result["ok"]:
                result["error"] = (
                    f"model {self.settings.model!r} not served (served: {', '.join(served) or 'none'})"
                )
        except (openai.OpenAIError, TimeoutError) as exc:
            result["error"] = _describe(exc)
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return result

    async def aclose(self) -> None:
        await self._client.close()

    @property
    def structured_output(self) -> str:
        """The response_format style in use now."""
        return self._format

    @property
    def in_flight(self) -> int:
        """Sequences in flight right now."""
        return self._limiter.in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most sequences ever in flight at once."""
        return self._limiter.peak

    # -- requests with retries -------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> Awaitable[Any]:
        """The SDK's plain POST with a body Sprout built field by field (`create()` would re-walk every
        parameter against its type hints on each request, a quarter of the request's CPU), raw reply back."""
        return self._client.post(
            path, body=body, cast_to=httpx2.Response, options={"headers": self._extra_headers}
        )

    async def _call(self, send: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
        """Send with retries; the reply's JSON body, read as plain JSON: building the SDK's pydantic models for
        every reply cost more CPU than everything else Sprout does with a reply."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception(_is_transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    async with asyncio.timeout(self.settings.timeout):  # the whole exchange, not each phase
                        raw = await send()
                        body = raw.content
                    try:
                        data = json.loads(body)
                    except ValueError:
                        raise LLMRequestError(
                            f"LLM server {self.base_url} sent a body that is not JSON: {body[:200]!r}"
                        ) from None
                    if not isinstance(data, dict):
                        raise LLMRequestError(
                            f"LLM server {self.base_url} sent JSON that is not an object: {body[:200]!r}"
                        )
                    return data
        except TimeoutError:
            raise LLMUnavailableError(
                f"LLM server {self.base_url}: no answer within {self.settings.timeout:g} s "
                f"after {self._attempts} attempt(s)"
            ) from None
        except openai.APIStatusError as exc:
            raise _classify(exc, self.base_url, self._attempts) from exc
        except openai.APIConnectionError as exc:
            raise LLMUnavailableError(
                f"LLM server {self.base_url} failed after {self._attempts} attempt(s): {_describe(exc)}"
            ) from exc
        except openai.OpenAIError as exc:  # a reply the SDK could not read
            raise LLMRequestError(f"LLM server {self.base_url}: {_describe(exc)}") from exc
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def _wait(self, retry_state: RetryCallState) -> float:
        """Jittered exponential backoff, stretched to the server's Retry-After when it sends one."""
        backoff = float(self._backoff(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = _retry_after(exc) if isinstance(exc, openai.APIStatusError) else None
        if retry_after is not None:
            return min(max(backoff, retry_after), max(self.settings.backoff_max, 1.0) * 2)
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
            _describe(exc) if exc is not None else "?",
            sleep,
        )


# -- helpers (pure functions on request / response data) -----------------------------------------------------


def _limits(in_flight: int) -> Any:
    return httpx2.Limits(max_connections=in_flight + 8, max_keepalive_connections=in_flight + 8)


def _sampling(params: SamplingParams) -> dict[str, Any]:
    body: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "n": params.n,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    if params.stop:  # some servers reject an empty list
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    return body


def _response_format(schema: dict[str, Any], style: str) -> dict[str, Any]:
    if style == "json_object":  # llama-cpp-python's server (and Anyscale's original JSON mode)
        return {"type": "json_object", "schema": schema}
    return {
        "type": "json_schema",
        "json_schema": {"name": _schema_name(schema), "schema": schema, "strict": True},
    }


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


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in _TRANSIENT_STATUSES:
            return True
        return status >= 500 and not _is_validation_report(_server_message(exc))
    return False


def _classify(exc: openai.APIStatusError, base_url: str, attempts: int) -> LLMError:
    status, message = exc.status_code, _server_message(exc)
    if status in (401, 403):
        return LLMFatalError(f"LLM server {base_url} rejected the credentials (HTTP {status}): {message}")
    if status == 404:
        return LLMFatalError(
            f"LLM server {base_url}: not found (HTTP 404; unknown model or wrong base_url): {message}"
        )
    if _is_transient(exc):
        return LLMUnavailableError(
            f"LLM server {base_url} failed after {attempts} attempt(s): HTTP {status}: {message}"
        )
    return ServerRejectedError(
        f"LLM server {base_url} rejected the request (HTTP {status}): {message}",
        status_code=status,
        server_message=message,
    )


def _server_message(exc: openai.APIStatusError) -> str:
    """The server's words: OpenAI's {"error": {"message"}}, old vLLM's {"message"}, FastAPI's {"detail"}."""
    body: Any = exc.body
    if isinstance(body, dict):
        if "message" in body:
            return str(body["message"])[:_MAX_ERROR_CHARS]
        if "detail" in body:
            return _fastapi_detail(body["detail"])[:_MAX_ERROR_CHARS]
        if isinstance(body.get("error"), str):
            return str(body["error"])[:_MAX_ERROR_CHARS]
    if body is not None:
        return str(body)[:_MAX_ERROR_CHARS]
    try:
        return exc.response.text.strip()[:_MAX_ERROR_CHARS] or exc.response.reason_phrase
    except Exception:  # noqa: BLE001 (a streamed body may be unreadable; the status still says enough)
        return f"HTTP {exc.status_code}"


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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {_server_message(exc)}"
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return f"connection failed ({type(cause).__name__}: {cause})" if cause else "connection failed"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
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


def _choices(data: dict[str, Any], url: str, *, expected: int) -> list[dict[str, Any]]:
    """The choices in index order, checked: one per prompt and per n, numbered 0..expected-1."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise LLMRequestError(f"{url} returned no list of choices: {str(data)[:200]}")
    indices = [c.get("index", i) for i, c in enumerate(choices)]
    if sorted(i for i in indices if isinstance(i, int)) != list(range(expected)):
        raise LLMRequestError(f"{url} returned choices {indices} where {expected} were expected")
    for choice, index in zip(choices, indices, strict=True):
        choice["index"] = index
    return sorted(choices, key=lambda c: c["index"])


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _usage(data: dict[str, Any]) -> dict[str, int]:
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return {
        "prompt_tokens": prompt if isinstance(prompt, int) and prompt >= 0 else 0,
        "completion_tokens": completion if isinstance(completion, int) and completion >= 0 else 0,
    }
