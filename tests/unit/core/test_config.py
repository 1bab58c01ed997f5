"""Named backends in settings: the only place a URL, a key or a model file can come from."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.config import BackendSettings, Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_embedded_model_is_always_there_as_local() -> None:
    s = settings()
    assert s.default_backend == "local"
    assert s.backends["local"].kind == "llamacpp" and s.backends["local"].in_flight == 1
    s = settings(backends={"qwen": {"kind": "openai", "base_url": "http://gpu1:8000/v1/", "model": "qwen"}})
    assert sorted(s.backends) == ["local", "qwen"]
    assert s.backends["qwen"].base_url == "http://gpu1:8000/v1" and s.backends["qwen"].in_flight == 64


def test_backends_come_from_the_environment_as_json_or_nested_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "SPROUT_BACKENDS",
        '{"vllm": {"kind": "openai", "base_url": "http://a:8000/v1", "max_in_flight": 256}}',
    )
    monkeypatch.setenv("SPROUT_DEFAULT_BACKEND", "vllm")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.default_backend == "vllm" and s.backends["vllm"].in_flight == 256 and "local" in s.backends
    monkeypatch.delenv("SPROUT_BACKENDS")
    monkeypatch.setenv("SPROUT_BACKENDS__VLLM__KIND", "openai")
    monkeypatch.setenv("SPROUT_BACKENDS__VLLM__BASE_URL", "http://b:8000/v1")
    monkeypatch.setenv("SPROUT_BACKENDS__VLLM__API_KEY", "secret")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.backends["vllm"].base_url == "http://b:8000/v1"
    assert (
        s.backends["vllm"].api_key is not None and s.backends["vllm"].api_key.get_secret_value() == "secret"
    )
    assert "secret" not in repr(s.backends["vllm"])  # a key is never shown


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ({"kind": "openai"}, "needs base_url"),
        ({"kind": "openai", "base_url": "file:///etc/passwd"}, "needs base_url"),
        ({"kind": "llamacpp", "base_url": "http://x/v1"}, "belongs to openai backends"),
        ({"kind": "fake"}, "kind"),
        ({"kind": "openai", "base_url": "http://x/v1", "surprise": 1}, "surprise"),
    ],
)
def test_a_misconfigured_backend_is_refused_at_start(backend: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BackendSettings(**backend)  # type: ignore[arg-type]


def test_backend_names_and_the_default_are_checked() -> None:
    with pytest.raises(ValidationError, match="backend name"):
        settings(backends={"Bad Name": {"kind": "llamacpp"}})
    with pytest.raises(ValidationError, match="default_backend 'nope' is not configured"):
        settings(default_backend="nope")
