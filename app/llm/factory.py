"""Pick the backend a job's LLMConfig names. Imports stay lazy so a missing optional package only matters when
its backend is actually chosen."""

from __future__ import annotations

from app.config import LLMConfig
from app.llm.base import LLMBackend


def create_backend(config: LLMConfig) -> LLMBackend:
    """A fresh backend for `config`; the caller owns it and must `await backend.aclose()`."""
    if config.backend == "openai_compat":
        from app.llm.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(
            config, max_batch=config.max_batch, structured_output=config.structured_output
        )
    if config.backend == "llamacpp":
        from app.llm.llamacpp import LlamaCppBackend

        return LlamaCppBackend(config)
    if config.backend == "fake":
        from app.llm.fake import ScriptedBackend

        return ScriptedBackend(model=config.model)
    raise ValueError(f"unknown LLM backend {config.backend!r} (expected llamacpp, openai_compat or fake)")
