"""The one small protocol every LLM backend implements, and the errors they raise.

A backend turns prompts into text. It never touches the database; retries, concurrency limits and timeouts live
inside the backend modules and nowhere else.
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
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """One generated text. finish_reason is "stop" or "length" (the text was cut at max_tokens)."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class BackendInfo:
    backend: str
    model: str
    details: dict[str, Any] = field(default_factory=dict)


class LLMError(Exception):
    """A backend could not produce text. The message is meant for the user (it ends up in the job's error)."""


class LLMUnavailableError(LLMError):
    """The server could not be reached or kept failing (connection errors, timeouts, 429, 5xx) after retries."""


class LLMRequestError(LLMError):
    """The server refused the request (a 4xx other than 429): retrying would not help."""


@runtime_checkable
class LLMBackend(Protocol):
    """Async text generation. Both methods return one Completion per prompt / conversation, in order."""

    info: BackendInfo

    async def complete(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        """Plain completions; an OpenAI-compatible backend sends the whole list in one request."""
        ...

    async def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        params: SamplingParams,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Completion]:
        """Chat completions; with json_schema the reply is constrained to JSON that follows it."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and model memory."""
        ...
