"""A scripted backend for fast unit tests of the pipeline's parsing and control flow.

It says exactly what the test tells it to and records what it was asked, so a test can check prompts, sampling
parameters and schemas without a model. It is not a model stand-in for anything else: real-model behaviour is
tested against the real embedded model and a real HTTP server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.llm.base import BackendInfo, ChatMessage, Completion, LLMError, SamplingParams

Reply = str | Completion | BaseException
Script = Sequence[Reply] | Callable[[str], Reply]


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """One call the backend received. For chat, `prompts` holds each conversation's last message."""

    kind: Literal["complete", "chat"]
    prompts: list[str]
    params: SamplingParams
    conversations: list[list[ChatMessage]] | None = None
    json_schema: dict[str, Any] | None = None


class ScriptedBackend:
    """Replies from a script: a list consumed in order (across calls), or a callable(prompt) -> reply.

    A reply may be a str, a ready Completion, or an exception instance, which is raised when its turn comes.
    `fail_with(exc)` makes every later call raise (e.g. LLMUnavailableError for a server that went down).
    Without a script it answers "fake reply N". A list that runs out raises LLMError unless cycle=True.
    """

    def __init__(self, script: Script | None = None, *, model: str = "fake", cycle: bool = False) -> None:
        self.info = BackendInfo(backend="fake", model=model)
        self._script = script
        self._cycle = cycle
        self._position = 0
        self._failure: BaseException | None = None
        self.calls: list[ScriptedCall] = []
        self.closed = False

    @property
    def prompts(self) -> list[str]:
        """Every prompt received so far, in order, over all calls."""
        return [prompt for call in self.calls for prompt in call.prompts]

    def fail_with(self, exc: BaseException | None) -> None:
        """Raise `exc` on every later call (None: back to normal)."""
        self._failure = exc

    async def complete(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        self.calls.append(ScriptedCall("complete", list(prompts), params))
        return [self._reply(prompt) for prompt in self._checked(prompts)]

    async def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        params: SamplingParams,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Completion]:
        convs = [list(conv) for conv in conversations]
        prompts = [conv[-1].content if conv else "" for conv in convs]
        self.calls.append(ScriptedCall("chat", prompts, params, convs, json_schema))
        return [self._reply(prompt) for prompt in self._checked(prompts)]

    async def aclose(self) -> None:
        self.closed = True

    def _checked(self, prompts: Sequence[str]) -> Sequence[str]:
        if self.closed:
            raise LLMError("ScriptedBackend is closed")
        if self._failure is not None:
            raise self._failure
        return prompts

    def _reply(self, prompt: str) -> Completion:
        reply = self._next(prompt)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Completion):
            return reply
        return Completion(
            text=reply,
            finish_reason="stop",
            prompt_tokens=len(prompt.split()),
            completion_tokens=len(reply.split()),
        )

    def _next(self, prompt: str) -> Reply:
        if self._script is None:
            self._position += 1
            return f"fake reply {self._position}"
        if callable(self._script):
            return self._script(prompt)
        if self._position >= len(self._script):
            if not (self._cycle and self._script):
                raise LLMError(f"ScriptedBackend ran out of replies after {self._position}")
            self._position = 0
        reply = self._script[self._position]
        self._position += 1
        return reply
