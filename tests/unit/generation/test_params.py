"""Job parameters: what a caller may set (never where the server connects), and the defaults it runs with."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.config import BackendSettings, Settings
from app.generation.params import GenerationParams, resolve_params

SETTINGS = Settings(_env_file=None, temperature=0.5, max_tokens=300, prompts_per_request=6)  # type: ignore[call-arg]
CHAT = BackendSettings(kind="openai", base_url="http://gpu:8000/v1", mode="chat")
COMPLETIONS = BackendSettings(kind="openai", base_url="http://gpu:8000/v1", mode="completions", max_batch=4)


@pytest.mark.parametrize(
    "field",
    ["llm", "base_url", "api_key", "model_path", "mode", "extra_body", "headers", "url"],
)
def test_nothing_that_names_an_address_a_key_or_a_file_is_accepted(field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        GenerationParams.model_validate({"count": 5, field: "http://169.254.169.254/latest"})
    assert caught.value.errors()[0]["loc"] == (field,)
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


def test_a_model_is_only_a_name_sent_as_the_request_model() -> None:
    """`model` names a tuned adapter registered on the backend (checked against the database when the job is
    queued, tests/integration/finetune); it only ever becomes the request body's model name."""
    tuned = resolve_params(GenerationParams(count=1, model="ft:base:sprout::x"), SETTINGS, CHAT)
    assert tuned.sampling().model == "ft:base:sprout::x"
    own = resolve_params(GenerationParams(count=1, model=CHAT.model), SETTINGS, CHAT)
    assert own.sampling().model is None  # the backend's own model: nothing to override
    with pytest.raises(ValidationError):
        GenerationParams(count=1, model="x" * 301)


def test_defaults_come_from_settings_and_the_backend() -> None:
    resolved = resolve_params(GenerationParams(count=12), SETTINGS, CHAT)
    assert resolved.mode == "chat" and resolved.prompts_per_request == 1
    assert (resolved.temperature, resolved.max_tokens, resolved.tasks_per_prompt) == (0.5, 300, 5)
    assert resolved.max_prompts == 4 * 3  # four times the prompts 12 items need at 5 per prompt
    assert resolved.max_errors == 20
    completions = resolve_params(GenerationParams(count=12, prompts_per_request=9), SETTINGS, COMPLETIONS)
    assert completions.mode == "completions" and completions.prompts_per_request == 4  # capped by max_batch


def test_n_and_the_error_budget() -> None:
    resolved = resolve_params(GenerationParams(count=100, n=4, max_prompts=2000), SETTINGS, CHAT)
    assert resolved.n == 4 and resolved.sampling().n == 4
    assert resolved.max_errors == 200  # 10% of the requests it may send
    assert resolve_params(GenerationParams(count=100, n=4), SETTINGS, CHAT).max_prompts == 4 * 5


def test_stored_params_round_trip() -> None:
    params = GenerationParams(count=7, backend="qwen", temperature=0.0, seed=3, language="zh")
    assert GenerationParams.model_validate(params.model_dump(mode="json", exclude_none=True)) == params
