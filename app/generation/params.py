"""Parameters of one generation job: validated at the edge, stored with the job, merged with settings at run time.

A job names a configured backend and sets sampling and filtering; it cannot carry a URL, a key, a model file
or anything else the server would use to reach out (unknown fields are a 422 naming them).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.config import BackendSettings, LLMMode, Settings
from app.llm.base import SamplingParams


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=10, ge=1, le=1_000_000, description="Items to accept (stored as pending).")
    priority: int = Field(
        default=0, ge=-100, le=100, description="Queue order: higher first; among equals, the oldest."
    )
    backend: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="A configured backend's name; default: the service's.",
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=300,
        description="A fine-tuned model (a job's fine_tuned_model) registered on the backend; "
        "default: the backend's own model.",
    )
    num_examples: int | None = Field(
        default=None, ge=1, le=20, description="In-context seed tasks per prompt."
    )
    tasks_per_prompt: int | None = Field(
        default=None, ge=1, le=50, description="New tasks asked for in each prompt."
    )
    prompts_per_request: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Completions mode: prompts sent in one /v1/completions request.",
    )
    n: int = Field(default=1, ge=1, le=16, description="Choices generated per prompt.")
    max_prompts: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Prompt budget; default: 4x the prompts the count needs.",
    )
    max_errors: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Failed requests the job tolerates; default: max(20, 10% of the requests it may send).",
    )
    language: Literal["auto", "en", "zh"] = Field(
        default="auto", description="Prompt language; auto follows the sampled seeds' script."
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=16, le=32_768)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**62,
        description="Seeds example sampling and the model; default: drawn at random and stored.",
    )
    rouge_threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    fuzzy_cutoff: float | None = Field(
        default=None,
        ge=0.0,
        le=100.0,
        description="Fuzzy signal: rapidfuzz ratio at or above it is a duplicate; 0 turns it off.",
    )


class ResolvedParams(BaseModel):
    """Job parameters with every default filled in from settings and the backend: what the pipeline runs with."""

    count: int
    mode: LLMMode
    num_examples: int
    tasks_per_prompt: int
    prompts_per_request: int
    n: int
    max_prompts: int
    max_errors: int
    language: Literal["auto", "en", "zh"]
    temperature: float
    top_p: float
    max_tokens: int
    presence_penalty: float
    rouge_threshold: float
    fuzzy_cutoff: float | None
    seed_the_model: bool
    model: str | None = None

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            n=self.n,
            presence_penalty=self.presence_penalty,
            model=self.model,
        )


def resolve_params(
    stored: dict[str, Any] | GenerationParams, settings: Settings, backend: BackendSettings
) -> ResolvedParams:
    params = stored if isinstance(stored, GenerationParams) else GenerationParams.model_validate(stored)
    tasks = params.tasks_per_prompt or settings.tasks_per_prompt
    if backend.mode == "completions":
        prompts_per_request = min(
            params.prompts_per_request or settings.prompts_per_request, backend.max_batch
        )
    else:
        prompts_per_request = 1  # chat: one conversation per request, `n` choices
    # Each prompt asks for `tasks` items; budget four times what the count needs (weak models waste most).
    max_prompts = params.max_prompts or max(4, 4 * math.ceil(params.count / (tasks * params.n)))
    requests = math.ceil(max_prompts / prompts_per_request)
    return ResolvedParams(
        count=params.count,
        mode=backend.mode,
        num_examples=params.num_examples or settings.num_examples,
        tasks_per_prompt=tasks,
        prompts_per_request=prompts_per_request,
        n=params.n,
        max_prompts=max_prompts,
        max_errors=params.max_errors if params.max_errors is not None else max(20, math.ceil(0.1 * requests)),
        language=params.language,
        temperature=settings.temperature if params.temperature is None else params.temperature,
        top_p=params.top_p or settings.top_p,
        max_tokens=params.max_tokens or settings.max_tokens,
        presence_penalty=params.presence_penalty or 0.0,
        rouge_threshold=params.rouge_threshold or settings.rouge_threshold,
        fuzzy_cutoff=settings.fuzzy_cutoff if params.fuzzy_cutoff is None else (params.fuzzy_cutoff or None),
        seed_the_model=params.seed is not None,
        model=params.model if params.model != backend.model else None,
    )
