"""LLM backends behind one small async protocol (base.py), reached only by configured name (registry.py)."""

from app.llm.base import (
    BackendInfo,
    ChatMessage,
    Choice,
    LLMBackend,
    LLMError,
    LLMFatalError,
    LLMRequestError,
    LLMUnavailableError,
    Reply,
    SamplingParams,
)
from app.llm.registry import BackendRegistry, UnknownBackendError

__all__ = [
    "BackendInfo",
    "BackendRegistry",
    "ChatMessage",
    "Choice",
    "LLMBackend",
    "LLMError",
    "LLMFatalError",
    "LLMRequestError",
    "LLMUnavailableError",
    "Reply",
    "SamplingParams",
    "UnknownBackendError",
]
