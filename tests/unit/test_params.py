"""Job parameters: validation at the edge, and how they merge with settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import LLMConfig, Settings
from app.generation.params import GenerationParams, resolve_params


def settings(**values) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_come_from_settings() -> None:
    resolved = resolve_params(GenerationParams(count=12), settings(temperature=0.3, num_examples=4))
    assert (resolved.temperature, resolved.num_examples, resolved.rouge_threshold) == (0.3, 4, 0.7)
    assert resolved.max_prompts == 4 * 3  # four times the prompts 12 items need at 5 tasks a prompt
    assert resolved.llm.backend == "llamacpp" and resolved.prompts_per_request == 1


def test_a_job_overrides_the_model_but_keeps_the_api_key_of_the_settings() -> None:
    base = settings(llm=LLMConfig(backend="openai_compat", api_key="secret", model="a"))
    params = GenerationParams(count=1, temperature=0.0, llm={"model": "b", "base_url": "http://gpu:8000/v1/"})
    resolved = resolve_params(params, base)
    assert resolved.temperature == 0.0  # an explicit zero is not "unset"
    assert (resolved.llm.model, resolved.llm.base_url, resolved.llm.api_key) == (
        "b",
        "http://gpu:8000/v1",
        "secret",
    )
    assert resolved.prompts_per_request == 4
    with pytest.raises(ValidationError, match="api_key"):
        GenerationParams(count=1, llm={"api_key": "stolen"})


def test_stored_params_round_trip() -> None:
    params = GenerationParams(count=3, language="zh", llm={"mode": "completions"})
    again = GenerationParams.model_validate(params.model_dump(mode="json", exclude_none=True))
    assert again == params
