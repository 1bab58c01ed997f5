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
- Replicas (`base_urls`): one SDK client per server, and every attempt, the first and each retry, asks the
  `ReplicaPool` (replicas.py) afresh for the replica in rotation with the fewest requests in flight, passing
  over the one this request just failed on. A connection error or a timeout takes the replica out at once and
  the retry goes elsewhere, so a replica killed mid-job costs retries, not the job; the pool's /health probe
  puts it back. A 404 from one replica (a restarted server that has not got a LoRA adapter back yet) sends the
  request to the others; it is fatal once every replica has said it.
- Metrics per backend and replica (app/ops/metrics.py): each failed attempt by kind, each answered request's
  time (its retries included) and tokens, requests in flight.
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
from app.llm.replicas import Replica, ReplicaPool
from app.ops.metrics import count_llm_error, observe_llm_request

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 500
_TRANSIENT_STATUSES = frozenset({408, 409, 429})

Send = Callable[[openai.AsyncOpenAI], Awaitable[Any]]  # one attempt's request, on one replica's client
Read = Callable[[dict[str, Any], str], Reply]  # the reply's JSON and the replica's API root -> the Reply


class ServerRejectedError(LLMRequestError):
    """The server refused the request. Keeps the status and the server's own words, so callers (and the
    json_object fallback) can tell cases apart."""

    def __init__(self, message: str, *, status_code: int, server_message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.server_message = server_message


class _RefusedHere(Exception):
    """A 404 from one replica while others have not been asked: try them before calling it fatal."""

    def __init__(self, error: openai.APIStatusError) -> None:
        super().__init__(str(error))
        self.error = error


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
        """`http_client` (an SDK-compatible async HTTP client, shared by every replica's SDK client) is for tests
        and benchmarks: a mock transport, a request recorder. `backoff_initial` lets tests retry in
        milliseconds."""
        urls = settings.replica_urls
        assert urls, "an openai backend has base_url or base_urls"  # checked by BackendSettings
        self.name = name
        self.settings = settings
        self.base_url = urls[0]  # the (first) server's API root
        self.info = BackendInfo(
            name=name,
            kind="openai",
            model=settings.model,
            mode=settings.mode,
            max_in_flight=settings.in_flight,
            max_batch=settings.max_batch,
            details={"base_url": self.base_url} if len(urls) == 1 else {"base_urls": list(urls)},
        )
        self._attempts = settings.max_retries + 1
        self._backoff = wait_random_exponential(multiplier=backoff_initial, max=settings.backoff_max)
        self._limiter = SequenceLimiter(settings.in_flight)  # over the whole backend, every replica
        self._pool = ReplicaPool(name, urls, health_path=settings.health_path)
        self._configured_format = settings.structured_output
        self._format = "json_object" if settings.structured_output == "json_object" else "json_schema"
        key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        # Nothing is taken from the process environment (OPENAI_API_KEY, OPENAI_ORG_ID, ...): this server gets
        # the key configured for it, or no Authorization header at all.
        headers: dict[str, Any] = {"OpenAI-Organization": openai.omit, "OpenAI-Project": openai.omit}
        # Without a key, the SDK wants to be told per request that no Authorization header is intended.
        self._extra_headers: dict[str, Any] = {} if key else {"Authorization": openai.omit}
        self._clients = [
            openai.AsyncOpenAI(
                api_key=key,
                admin_api_key="",
                base_url=url,
                timeout=settings.timeout,
                max_retries=0,
                default_headers=headers,
                http_client=http_client
                or openai.DefaultAsyncHttpxClient(
                    limits=_limits(settings.in_flight), timeout=settings.timeout, trust_env=False
                ),
            )
            for url in urls
        ]

    # -- the LLMBackend protocol -----------------------------------------------------------------------------

    async def complete(self, prompts: Sequence[str], params: SamplingParams) -> Reply:
        prompts = list(prompts)
        if not prompts:
            return Reply(choices=[])
        if len(prompts) > self.info.max_batch:
            raise ValueError(
                f"{len(prompts)} prompts in one request; this backend takes at most {self.info.max_batch}"
            )
        expected = len(prompts) * params.n

        def read(data: dict[str, Any], url: str) -> Reply:
            choices = _choices(data, f"{url}/completions", expected=expected)
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

        async with self._limiter.hold(expected):
            body = {
                "model": params.model or self.settings.model,
                "prompt": prompts,
                **_sampling(params),
                **self.settings.extra_body,
            }
            return await self._call(lambda client: self._post(client, "/completions", body), read)

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        json_schema: dict[str, Any] | None = None,
    ) -> Reply:
        body_messages = [{"role": m.role, "content": m.content} for m in messages]

        def send(style: str | None) -> Send:
            body: dict[str, Any] = {
                "model": params.model or self.settings.model,
                "messages": body_messages,
                **_sampling(params),
            }
            if style is not None:
                body["response_format"] = _response_format(json_schema or {}, style)
            body.update(self.settings.extra_body)
            return lambda client: self._post(client, "/chat/completions", body)

        def read(data: dict[str, Any], url: str) -> Reply:
            choices = _choices(data, f"{url}/chat/completions", expected=params.n)
            return Reply(
                choices=[
                    Choice(
                        text=_text((c.get("message") or {}).get("content")),
                        finish_reason=c.get("finish_reason"),
                    )
                    for c in choices
                ],
                **_usage(data),
            )

        async with self._limiter.hold(params.n):
            if json_schema is None:
                return await self._call(send(None), read)
            style = self._format
            try:
                return await self._call(send(style), read)
            except ServerRejectedError as exc:
                if not (
                    style == "json_schema" and self._configured_format == "auto" and _rejects_format(exc)
                ):
                    raise
                if self._format != "json_object":
                    log.warning(
                        "backend %s does not accept response_format json_schema (%s); "
                        "using json_object with a schema",
                        self.name,
                        exc.server_message,
                    )
                    self._format = "json_object"
            return await self._call(send("json_object"), read)

    async def health(self) -> dict[str, Any]:
        """One quick look (no retries) at every replica: is it up, and does it serve our model? The backend is
        ok when any replica is; each replica's own answer and its place in rotation are under "replicas"."""
        started = time.perf_counter()
        replicas = await asyncio.gather(*(self._replica_health(r) for r in self._pool.replicas))
        result: dict[str, Any] = {
            "ok": any(r["ok"] for r in replicas),
            "kind": "openai",
            "model": self.settings.model,
        }
        if not result["ok"]:
            result["error"] = (
                replicas[0]["error"]
                if len(replicas) == 1
                else "; ".join(f"{r['replica']}: {r['error']}" for r in replicas)
            )
        result["replicas"] = replicas
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return result

    async def _replica_health(self, replica: Replica) -> dict[str, Any]:
        started = time.perf_counter()
        result: dict[str, Any] = {
            "replica": replica.label,
            "ok": False,
            "in_rotation": replica.up,
            "in_flight": replica.in_flight,
        }
        try:
            async with asyncio.timeout(10):
                page = await self._clients[replica.index].models.list(extra_headers=self._extra_headers)
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
        await self._pool.aclose()
        for client in self._clients:
            await client.close()

    @property
    def replicas(self) -> ReplicaPool:
        """The servers behind this backend and what this process knows of them."""
        return self._pool

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

    def _post(self, client: openai.AsyncOpenAI, path: str, body: dict[str, Any]) -> Awaitable[Any]:
        """The SDK's plain POST with a body Sprout built field by field (`create()` would re-walk every
        parameter against its type hints on each request, a quarter of the request's CPU), raw reply back."""
        return client.post(path, body=body, cast_to=httpx2.Response, options={"headers": self._extra_headers})

    async def _call(self, send: Send, read: Read) -> Reply:
        """Send with retries, each attempt on the replica the pool picks for it then; the Reply.

        The body is read as plain JSON: building the SDK's pydantic models for every reply cost more CPU than
        everything else Sprout does with a reply."""
        pool = self._pool
        pool.start_probing(self._probe, self.settings.health_interval)
        started = time.perf_counter()
        failed_on: list[Replica] = []  # the replica of each failed attempt, in order
        refused: set[Replica] = set()  # replicas that answered 404
        retrying = AsyncRetrying(
            # Asking another replica after a 404 costs no retry (at most one extra attempt per replica).
            stop=lambda state: state.attempt_number - len(refused) >= self._attempts,
            wait=self._wait,
            retry=retry_if_exception(_is_transient),
            before_sleep=lambda state: self._log_retry(state, failed_on),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    with pool.attempt(avoid=failed_on[-1:], exclude=refused) as replica:
                        since = pool.now()
                        try:
                            reply = await self._attempt(replica, send, read)
                        except Exception as exc:
                            failed_on.append(replica)
                            kind = _error_kind(exc)
                            count_llm_error(self.name, replica.label, kind)
                            pool.failed(replica, _describe(exc), take_out=kind in ("connection", "timeout"))
                            if (
                                isinstance(exc, openai.APIStatusError)
                                and exc.status_code == 404
                                and len(refused | {replica}) < len(pool)
                            ):
                                refused.add(replica)
                                raise _RefusedHere(exc) from exc
                            raise
                    pool.succeeded(replica, since)
                    observe_llm_request(
                        self.name,
                        replica.label,
                        time.perf_counter() - started,
                        reply.prompt_tokens,
                        reply.completion_tokens,
                    )
                    return reply
        except _RefusedHere as exc:  # (a refusal costs no attempt, so this is only a safety net)
            raise _classify(exc.error, self._where(failed_on), self._attempts) from exc.error
        except TimeoutError:
            raise LLMUnavailableError(
                f"LLM server {self._where(failed_on)}: no answer within {self.settings.timeout:g} s "
                f"after {self._attempts} attempt(s)"
            ) from None
        except openai.APIStatusError as exc:
            raise _classify(exc, self._where(failed_on), self._attempts) from exc
        except openai.APIConnectionError as exc:
            raise LLMUnavailableError(
                f"LLM server {self._where(failed_on)} failed after {self._attempts} attempt(s): {_describe(exc)}"
            ) from exc
        except openai.OpenAIError as exc:  # a reply the SDK could not read
            raise LLMRequestError(f"LLM server {self._where(failed_on)}: {_describe(exc)}") from exc
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def _attempt(self, replica: Replica, send: Send, read: Read) -> Reply:
        async with asyncio.timeout(self.settings.timeout):  # the whole exchange, not each phase
            raw = await send(self._clients[replica.index])
            body = raw.content
        try:
            data = json.loads(body)
        except ValueError:
            raise LLMRequestError(
                f"LLM server {replica.url} sent a body that is not JSON: {body[:200]!r}"
            ) from None
        if not isinstance(data, dict):
            raise LLMRequestError(f"LLM server {replica.url} sent JSON that is not an object: {body[:200]!r}")
        return read(data, replica.url)

    async def _probe(self, replica: Replica) -> str | None:
        """GET the replica's /health through its own SDK client (no retries): None when it answers 200."""
        assert replica.health_url is not None
        timeout = self.settings.health_timeout
        try:
            async with asyncio.timeout(timeout):
                response = await self._clients[replica.index].get(
                    replica.health_url,
                    cast_to=httpx2.Response,
                    options={"headers": self._extra_headers, "timeout": timeout},
                )
        except (openai.OpenAIError, TimeoutError) as exc:
            return _describe(exc)
        return None if response.status_code == 200 else f"HTTP {response.status_code}"

    def _where(self, failed_on: Sequence[Replica]) -> str:
        """The server a message names: the one of the last attempt (and how many others this request tried)."""
        if not failed_on:
            return self.base_url
        others = len({r.index for r in failed_on} - {failed_on[-1].index})
        suffix = f" (and {others} other replica(s) of backend {self.name})" if others else ""
        return f"{failed_on[-1].url}{suffix}"

    def _wait(self, retry_state: RetryCallState) -> float:
        """Jittered exponential backoff, stretched to the server's Retry-After when it sends one; none before
        asking another replica after a 404."""
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _RefusedHere):
            return 0.0
        backoff = float(self._backoff(retry_state))
        retry_after = _retry_after(exc) if isinstance(exc, openai.APIStatusError) else None
        if retry_after is not None:
            return min(max(backoff, retry_after), max(self.settings.backoff_max, 1.0) * 2)
        return backoff

    def _log_retry(self, retry_state: RetryCallState, failed_on: Sequence[Replica]) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning(
            "LLM request to %s failed (attempt %d/%d): %s; retrying in %.2f s",
            failed_on[-1].url if failed_on else self.base_url,
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
    if isinstance(exc, TimeoutError | openai.APIConnectionError | _RefusedHere):
        return True
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in _TRANSIENT_STATUSES:
            return True
        return status >= 500 and not _is_validation_report(_server_message(exc))
    return False


def _error_kind(exc: BaseException) -> str:
    """The `kind` label of a failed attempt in sprout_llm_errors."""
    if isinstance(exc, TimeoutError | openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (401, 403, 404):
            return "fatal"
        if status == 429:
            return "http_429"
        return "http_5xx" if status >= 500 else "http_4xx"
    return "invalid_reply"  # a body that is not JSON, JSON of the wrong shape, choices missing


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
