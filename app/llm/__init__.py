"""LLM backends behind one small async protocol (see base.py); create_backend picks one from an LLMConfig."""

from app.llm.base import (
    BackendInfo,
    ChatMessage,
    Completion,
    LLMBackend,
    LLMError,
    LLMRequestError,
    LLMUnavailableError,
    SamplingParams,
)
from app.llm.factory import create_backend

__all__ = [
    "BackendInfo",
    "ChatMessage",
    "Completion",
    "LLMBackend",
    "LLMError",
    "LLMRequestError",
    "LLMUnavailableError",
    "SamplingParams",
    "create_backend",
]
