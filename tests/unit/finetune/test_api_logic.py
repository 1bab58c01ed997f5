"""Pure parts of the fine-tuning API: the file checks, OpenAI-shaped errors, hyperparameters, model names."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.finetune.errors import FileValidationError, validation_error_body
from app.finetune.files import JsonlChecker, JsonlError
from app.finetune.models import FineTuneJob
from app.finetune.schemas import JobCreate, api_status, tuned_model_name
from app.finetune.service import resolve_hyperparameters
from app.finetune.validation import validate_examples
from app.jobs.models import JobStatus


def line(*messages: tuple[str, str]) -> bytes:
    return json.dumps(
        {"messages": [{"role": r, "content": c} for r, c in messages]}, ensure_ascii=False
    ).encode()


GOOD = line(("system", "Be brief."), ("user", "翻译成英文：你好"), ("assistant", "Hello"))


def check(lines: list[bytes], **kwargs) -> int:  # noqa: ANN003
    options = {"param": "training_file", "min_examples": 1, "context_length": 100, **kwargs}
    return validate_examples(lines, **options)


def test_valid_examples_are_counted_and_blank_lines_skipped() -> None:
    assert check([GOOD, b"", b"  ", GOOD]) == 2


@pytest.mark.parametrize(
    ("bad", "code", "words"),
    [
        (b"{nope", "invalid_file_format", "not JSON"),
        (b"[1, 2]", "invalid_file_format", "object"),
        (json.dumps({"prompt": "x"}).encode(), "invalid_file_format", "'messages'"),
        (line(("user", "hi"), ("robot", "beep")), "invalid_file_format", "messages[1].role 'robot'"),
        (
            json.dumps({"messages": [{"role": "user", "content": 3}]}).encode(),
            "invalid_file_format",
            "content",
        ),
        (line(("user", "hi")), "missing_assistant_message", "no assistant"),
        (line(("user", "hi"), ("assistant", "  ")), "missing_assistant_message", "no assistant"),
    ],
)
def test_a_bad_line_is_named_with_its_code(bad: bytes, code: str, words: str) -> None:
    with pytest.raises(FileValidationError) as failed:
        check([GOOD, GOOD, bad, GOOD], param="validation_file")
    assert failed.value.code == code and failed.value.param == "validation_file"
    assert failed.value.message.startswith("line 3: ") and words in failed.value.message


def test_length_is_counted_by_the_models_tokenizer_and_too_few_examples_fail() -> None:
    with pytest.raises(FileValidationError) as failed:
        check([GOOD, GOOD], count_tokens=lambda messages: 101 if len(messages) == 3 else 1)
    assert (
        failed.value.code == "exceeds_max_length"
        and "line 1" in failed.value.message
        and "101" in failed.value.message
    )
    with pytest.raises(FileValidationError) as failed:
        check([GOOD] * 3, min_examples=10)
    assert failed.value.code == "invalid_n_examples" and "3 example(s)" in failed.value.message


@given(st.lists(st.sampled_from([GOOD, b"", b'{"a": "\xe4\xbd\xa0"}']), max_size=12), st.integers(1, 7))
def test_jsonl_checker_counts_the_same_whatever_the_chunking(lines: list[bytes], size: int) -> None:
    data = b"\n".join(lines)
    checker = JsonlChecker()
    for start in range(0, len(data), size):  # chunks split lines and even UTF-8 characters
        checker.feed(data[start : start + size])
    checker.close()
    assert checker.records == sum(1 for x in lines if x.strip())


def test_jsonl_checker_names_the_line() -> None:
    checker = JsonlChecker()
    with pytest.raises(JsonlError) as failed:
        checker.feed(GOOD + b"\n\n" + b'"just a string"\n')
    assert failed.value.line == 3


def test_validation_errors_name_the_parameter_without_pydantic_union_tags() -> None:
    try:
        JobCreate.model_validate({"model": "m", "training_file": "f", "hyperparameters": {"n_epochs": 0}})
    except Exception as exc:  # noqa: BLE001
        errors = exc.errors()  # type: ignore[attr-defined]
    body = validation_error_body([{**e, "loc": ("body", *e["loc"])} for e in errors])["error"]
    assert body["param"] == "hyperparameters.n_epochs" and body["type"] == "invalid_request_error"
    assert "hyperparameters.n_epochs" in body["message"]


def test_auto_hyperparameters_resolve_to_numbers_and_numbers_stay() -> None:
    auto = resolve_hyperparameters({}, examples=200, learning_rate=2e-4)
    assert auto == {"n_epochs": 3, "batch_size": 3, "learning_rate_multiplier": 1.0, "learning_rate": 2e-4}
    assert resolve_hyperparameters({}, examples=12, learning_rate=1e-4)["n_epochs"] == 9  # ~100 examples seen
    chosen = resolve_hyperparameters(
        {"n_epochs": 2, "batch_size": 16, "learning_rate_multiplier": 0.5}, examples=5000, learning_rate=2e-4
    )
    assert chosen == {"n_epochs": 2, "batch_size": 16, "learning_rate_multiplier": 0.5, "learning_rate": 1e-4}


def test_method_hyperparameters_win_and_suffix_is_bounded() -> None:
    body = JobCreate.model_validate(
        {
            "model": "m",
            "training_file": "f",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4}}},
        }
    )
    assert body.chosen_hyperparameters().n_epochs == 4
    with pytest.raises(ValueError, match="18"):
        JobCreate.model_validate({"model": "m", "training_file": "f", "suffix": "x" * 19})
    with pytest.raises(ValueError):
        JobCreate.model_validate(
            {"model": "m", "training_file": "f", "suffix": "a:b"}
        )  # would break the name


def job(**values) -> FineTuneJob:  # noqa: ANN003
    defaults = {"public_id": "ftjob-abc123", "model": "HuggingFaceTB/SmolLM2:135M", "suffix": None}
    made = FineTuneJob(**{**defaults, **values})
    made.created_at = datetime.now(UTC)
    return made


def test_tuned_model_names_follow_openais_pattern_with_a_safe_base() -> None:
    assert tuned_model_name(job(suffix="zh-en")) == "ft:HuggingFaceTB--SmolLM2-135M:sprout:zh-en:abc123"
    assert tuned_model_name(job()) == "ft:HuggingFaceTB--SmolLM2-135M:sprout::abc123"


@pytest.mark.parametrize(
    ("status", "validated", "shown"),
    [
        (JobStatus.queued, False, "validating_files"),
        (JobStatus.running, False, "validating_files"),
        (JobStatus.queued, True, "queued"),
        (JobStatus.running, True, "running"),
        (JobStatus.failed, False, "failed"),
        (JobStatus.succeeded, True, "succeeded"),
        (JobStatus.cancelled, True, "cancelled"),
    ],
)
def test_openai_status_of_a_queue_status(status: JobStatus, validated: bool, shown: str) -> None:
    assert api_status(job(status=status, files_validated=validated)) == shown


def test_a_failed_trainer_is_out_of_memory_only_when_memory_ran_out() -> None:
    from app.finetune.local import Supervised, failure

    assert failure(-9, Supervised(over_memory_mb=812.4), "", 600) == (
        "out_of_memory",
        "the trainer used 812 MB, over the limit of 600 MB (SPROUT_FINETUNE_MEMORY_LIMIT_MB); it was stopped",
    )
    assert failure(-9, Supervised(), "", None)[0] == "out_of_memory"  # killed from elsewhere: the OOM killer
    assert failure(1, Supervised(error="MemoryError: "), "", None)[0] == "out_of_memory"
    code, message = failure(1, Supervised(error="OSError: no such file"), "Traceback ...", None)
    assert code == "trainer_failed" and message == "the trainer exited with code 1: OSError: no such file"
    assert failure(1, Supervised(), "Traceback\nValueError: bad\n", None)[1].endswith("ValueError: bad")
