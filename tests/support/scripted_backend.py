"""A scripted backend for fast unit tests of the pipeline's parsing and control flow (never reachable from the
API or the CLI: tests hand it to a BackendRegistry themselves).

It says exactly what the test tells it to and records what it was asked, so a test can check prompts, sampling
parameters and schemas without a model. Real-model behaviour is tested against the real embedded model and
real HTTP servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.llm.base import BackendInfo, ChatMessage, Choice, LLMError, Reply, SamplingParams

ReplyText = str | None | BaseException
Script = Sequence[ReplyText] | Callable[[str], ReplyText]


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """One request the backend received. For chat, `prompts` holds the conversation's last message."""

    kind: Literal["complete", "chat"]
    prompts: list[str]
    params: SamplingParams
    messages: list[ChatMessage] | None = None
    json_schema: dict[str, Any] | None = None


class ScriptedBackend:
    """Replies from a script: a list consumed in order (across calls), or a callable(prompt) -> reply.

    A reply is a str, None (a choice without text, like `content: null`) or an exception instance, raised when
    its turn comes. `delay` (seconds, or a callable(prompt) -> seconds) makes each request take time, so tests
    can watch concurrency; `in_flight`/`max_seen_in_flight` count requests being answered.
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        name: str = "scripted",
        model: str = "scripted-model",
        mode: Literal["chat", "completions"] = "chat",
        max_in_flight: int = 1,
        max_batch: int = 16,
        cycle: bool = False,
        delay: float | Callable[[str], float] = 0.0,
    ) -> None:
        self.info = BackendInfo(
            name=name,
            kind="scripted",
            model=model,
            mode=mode,
            max_in_flight=max_in_flight,
            max_batch=max_batch,
        )
        self._script = script
        self._cycle = cycle
        self._delay = delay
        self._position = 0
        self.calls: list[ScriptedCall] = []
        self.closed = False
        self.in_flight = 0
        self.max_seen_in_flight = 0
        self.cancelled = 0

    @property
    def prompts(self) -> list[str]:
        return [prompt for call in self.calls for prompt in call.prompts]

    async def complete(self, prompts: Sequence[str], params: SamplingParams) -> Reply:
        self.calls.append(ScriptedCall("complete", list(prompts), params))
        return await self._answer(list(prompts), params)

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        json_schema: dict[str, Any] | None = None,
    ) -> Reply:
        prompt = messages[-1].content if messages else ""
        self.calls.append(ScriptedCall("chat", [prompt], params, list(messages), json_schema))
        return await self._answer([prompt], params)

    async def health(self) -> dict[str, Any]:
        return {"ok": not self.closed, "kind": "scripted"}

    async def aclose(self) -> None:
        self.closed = True

    async def _answer(self, prompts: list[str], params: SamplingParams) -> Reply:
        if self.closed:
            raise LLMError("ScriptedBackend is closed")
        self.in_flight += 1
        self.max_seen_in_flight = max(self.max_seen_in_flight, self.in_flight)
        try:
            delay = self._delay(prompts[0]) if callable(self._delay) else self._delay
            if delay:
                await asyncio.sleep(delay)
            choices = []
            for index, prompt in enumerate(prompts):
                for _ in range(params.n):
                    text = self._next(prompt)
                    if isinstance(text, BaseException):
                        raise text
                    choices.append(Choice(text=text, finish_reason="stop", prompt_index=index))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        words = sum(len(p.split()) for p in prompts)
        return Reply(
            choices=choices,
            prompt_tokens=words,
            completion_tokens=sum(len((c.text or "").split()) for c in choices),
        )

    def _next(self, prompt: str) -> ReplyText:
        if self._script is None:
            self._position += 1
            return f"scripted reply {self._position}"
        if callable(self._script):
            return self._script(prompt)
        if self._position >= len(self._script):
            if not (self._cycle and self._script):
                raise LLMError(f"ScriptedBackend ran out of replies after {self._position}")
            self._position = 0
        reply = self._script[self._position]
        self._position += 1
        return reply
