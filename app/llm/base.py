"""The one small protocol every LLM backend implements, the plain data it exchanges, and its errors.

A backend turns one request (a list of prompts, or one conversation) into one `Reply`. It never touches the
database; retries, concurrency limits and timeouts live in the backend modules and nowhere else.

Errors are sorted by what the caller should do about them:
- `LLMFatalError`: no request to this backend can succeed (unknown model, rejected credentials, a missing
  model file): the job fails at once, naming the cause.
- `LLMRequestError`: this request was refused (a 400 for an over-long prompt, ...) or `LLMUnavailableError`:
  the server kept failing after retries. The job counts the error and goes on, within its error budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024
    n: int = 1
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    model: str | None = (
        None  # a LoRA adapter the server holds (a fine-tuned model); None: the backend's model
    )


@dataclass(frozen=True, slots=True)
class Choice:
    """One generated text. `text` is None when the server sent none (a chat reply with `content: null`);
    finish_reason is "stop" or "length" (cut at max_tokens); prompt_index is the prompt it answers."""

    text: str | None
    finish_reason: str | None = None
    prompt_index: int = 0


@dataclass(frozen=True, slots=True)
class Reply:
    """What one request brought back: `n` choices per prompt, ordered by prompt then choice, and usage."""

    choices: list[Choice]
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class BackendInfo:
    name: str
    kind: str
    model: str
    mode: Literal["chat", "completions"]
    max_in_flight: int
    max_batch: int
    details: dict[str, Any] = field(default_factory=dict)


class LLMError(Exception):
    """A backend could not produce text. The message is meant for the user (it ends up in the job)."""


class LLMFatalError(LLMError):
    """No request to this backend can succeed until an operator fixes something: fail the job now."""


class LLMUnavailableError(LLMError):
    """The server could not be reached or kept failing (connection errors, timeouts, 429, 5xx) after retries."""


class LLMRequestError(LLMError):
    """The server refused this request (a 4xx other than 401/403/404/408/409/429): retrying would not help."""


@runtime_checkable
class LLMBackend(Protocol):
    """Async text generation, one request per call."""

    info: BackendInfo

    async def complete(self, prompts: Sequence[str], params: SamplingParams) -> Reply:
        """Plain completions of every prompt (an OpenAI-compatible backend sends them in one request)."""
        ...

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        json_schema: dict[str, Any] | None = None,
    ) -> Reply:
        """One conversation, `params.n` choices; with json_schema each reply is JSON that follows it."""
        ...

    async def health(self) -> dict[str, Any]:
        """One quick look for a status page: can this backend answer?"""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and model memory."""
        ...
