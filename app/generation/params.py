"""Parameters of one generation job: validated at the edge, stored with the job, merged with settings at run time."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from app.config import BackendName, LLMConfig, LLMMode, Settings


class LLMOverrides(BaseModel):
    """Per-job choice of model. API keys are never stored with a job: they come from settings only."""

    model_config = ConfigDict(extra="forbid")

    backend: BackendName | None = None
    model: str | None = Field(default=None, min_length=1, max_length=200)
    base_url: HttpUrl | None = None
    mode: LLMMode | None = None


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=10, ge=1, le=100_000, description="Items to accept (stored as pending).")
    num_examples: int | None = Field(
        default=None, ge=1, le=20, description="In-context seed tasks per prompt."
    )
    tasks_per_prompt: int = Field(default=5, ge=1, le=50, description="New tasks asked for in each prompt.")
    prompts_per_request: int | None = Field(
        default=None, ge=1, le=256, description="Prompts sent together (one request in completions mode)."
    )
    max_prompts: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Prompt budget; default 4x the prompts count needs."
    )
    language: Literal["auto", "en", "zh"] = Field(
        default="auto", description="Prompt language; auto follows the sampled seeds' script."
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=16, le=32_768)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = Field(
        default=None, description="Seeds the example sampling (and the model, if it can)."
    )
    rouge_threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    fuzzy_cutoff: float | None = Field(default=None, gt=0.0, le=100.0)
    llm: LLMOverrides | None = None

    def prompt_budget(self) -> int:
        return self.max_prompts or max(4, 4 * math.ceil(self.count / self.tasks_per_prompt))


class ResolvedParams(BaseModel):
    """Job parameters with every default filled in from settings: what the pipeline actually runs with."""

    count: int
    num_examples: int
    tasks_per_prompt: int
    prompts_per_request: int
    max_prompts: int
    language: Literal["auto", "en", "zh"]
    temperature: float
    top_p: float
    max_tokens: int
    presence_penalty: float
    seed: int | None
    rouge_threshold: float
    fuzzy_cutoff: float | None
    llm: LLMConfig


def resolve_params(params: GenerationParams, settings: Settings) -> ResolvedParams:
    llm = settings.llm
    if params.llm is not None:
        overrides = params.llm.model_dump(exclude_none=True)
        if "base_url" in overrides:
            overrides["base_url"] = str(overrides["base_url"]).rstrip("/")
        llm = llm.model_copy(update=overrides)
    return ResolvedParams(
        count=params.count,
        num_examples=params.num_examples or settings.num_examples,
        tasks_per_prompt=params.tasks_per_prompt,
        prompts_per_request=params.prompts_per_request or _default_prompts_per_request(llm, settings),
        max_prompts=params.prompt_budget(),
        language=params.language,
        temperature=settings.temperature if params.temperature is None else params.temperature,
        top_p=params.top_p or settings.top_p,
        max_tokens=params.max_tokens or settings.max_tokens,
        presence_penalty=params.presence_penalty or 0.0,
        seed=params.seed,
        rouge_threshold=params.rouge_threshold or settings.rouge_threshold,
        fuzzy_cutoff=params.fuzzy_cutoff if params.fuzzy_cutoff is not None else settings.fuzzy_cutoff,
        llm=llm,
    )


def _default_prompts_per_request(llm: LLMConfig, settings: Settings) -> int:
    # The embedded model answers one prompt at a time: batching would only delay the first stored items.
    return 1 if llm.backend == "llamacpp" else settings.prompts_per_request
