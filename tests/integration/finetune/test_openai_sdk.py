"""The official `openai` SDK, unchanged, drives Sprout's files and fine-tuning API over real HTTP: upload, create,
watch, list events and checkpoints, cancel, download results; and every refusal arrives as the SDK's own error
with OpenAI's `param` and `code`. The job trains for real (TRL + PEFT, the embedded model's checkpoint), with a
handful of steps and short sequences.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest

from app.auth.roles import Role
from app.core.config import DEFAULT_MODEL_NAME, FinetuneModelSettings
from tests.support.app_server import serving
from tests.support.service import make_settings, new_user_token

pytestmark = [pytest.mark.slow, pytest.mark.model]

PAIRS = [
    ("翻译成英文：你好", "Hello"),
    ("翻译成英文：谢谢", "Thank you"),
    ("翻译成英文：早上好", "Good morning"),
    ("Name the capital of France.", "Paris"),
    ("What is 2 + 3?", "5"),
    ("Give the opposite of 'hot'.", "cold"),
    ("把这句话改成疑问句：他来了。", "他来了吗？"),
    ("List three primary colours.", "Red, yellow and blue."),
    ("Spell 'cat' backwards.", "tac"),
    ("What colour is the sky on a clear day?", "Blue"),
    ("用一个词形容大海。", "辽阔"),
    ("Translate 'dog' into Spanish.", "perro"),
]


def chat_lines(pairs: list[tuple[str, str]]) -> bytes:
    return "\n".join(
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
            ensure_ascii=False,
        )
        for q, a in pairs
    ).encode()


@contextmanager
def sdk_client(
    database_url: str, checkpoint: Path, tmp_path: Path, **overrides: Any
) -> Iterator[openai.OpenAI]:
    """Sprout over real HTTP, and the SDK pointed at it with a service token."""
    values: dict[str, Any] = {
        "finetune_models": {
            DEFAULT_MODEL_NAME: FinetuneModelSettings(
                path=str(checkpoint), max_length=128, context_length=256
            )
        },
        "finetune_dir": tmp_path / "finetune",
        "job_lease_seconds": 30,
    }
    settings = make_settings(database_url, **{**values, **overrides})
    with serving(settings) as served:
        token = new_user_token(served.app, Role.service)
        yield openai.OpenAI(base_url=f"{served.base_url}/v1", api_key=token, max_retries=0, timeout=60)


@pytest.fixture
def client(database_url: str, vllm_checkpoint: Path, tmp_path: Path) -> Iterator[openai.OpenAI]:
    with sdk_client(database_url, vllm_checkpoint, tmp_path, finetune_max_steps=3) as sdk:
        yield sdk


def wait_for(client: openai.OpenAI, job_id: str, statuses: set[str], timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")


def test_files_round_trip_through_the_sdk(client: openai.OpenAI) -> None:
    data = chat_lines(PAIRS)
    uploaded = client.files.create(file=("train.jsonl", data), purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(data)
    assert uploaded.purpose == "fine-tune" and uploaded.filename == "train.jsonl"
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert uploaded.id in [f.id for f in client.files.list()]
    assert client.files.content(uploaded.id).read() == data

    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("bad.jsonl", data + b"\n{not json}\n"), purpose="fine-tune")
    assert refused.value.body["param"] == "file" and "line 13" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("list.jsonl", b"[1, 2]\n"), purpose="fine-tune")
    assert "line 1" in refused.value.body["message"]
    assert len(client.files.list().data) == 1  # nothing half-stored by the refusals

    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_bad_job_requests_are_400s_naming_the_parameter(client: openai.OpenAI) -> None:
    training = client.files.create(file=("train.jsonl", chat_lines(PAIRS)), purpose="fine-tune")
    few = client.files.create(file=("few.jsonl", chat_lines(PAIRS[:3])), purpose="fine-tune")
    cases = [
        ({"model": "gpt-4o-mini", "training_file": training.id}, "model"),
        ({"model": DEFAULT_MODEL_NAME, "training_file": "file-nope"}, "training_file"),
        ({"model": DEFAULT_MODEL_NAME, "training_file": few.id}, "training_file"),
        ({"model": DEFAULT_MODEL_NAME, "training_file": training.id, "suffix": "s" * 19}, "suffix"),
        (
            {"model": DEFAULT_MODEL_NAME, "training_file": training.id, "hyperparameters": {"n_epochs": 0}},
            "hyperparameters.n_epochs",
        ),
        (
            {"model": DEFAULT_MODEL_NAME, "training_file": training.id, "validation_file": "file-nope"},
            "validation_file",
        ),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.jobs.create(**kwargs)
        assert refused.value.body["param"] == param, (kwargs, refused.value.body)
        assert refused.value.body["message"]
    assert client.fine_tuning.jobs.list().data == []  # no half-made job
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")


def test_a_job_trains_with_the_sdk_watching(client: openai.OpenAI) -> None:
    training = client.files.create(file=("train.jsonl", chat_lines(PAIRS)), purpose="fine-tune")
    validation = client.files.create(file=("valid.jsonl", chat_lines(PAIRS[:3])), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=DEFAULT_MODEL_NAME,
        training_file=training.id,
        validation_file=validation.id,
        suffix="zh-en",
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 2}}},
        metadata={"team": "data"},
    )
    assert job.id.startswith("ftjob-") and job.status in ("validating_files", "queued", "running")
    assert job.training_file == training.id and job.validation_file == validation.id and job.seed == 7

    done = wait_for(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:{DEFAULT_MODEL_NAME}:sprout:zh-en:{job.id.removeprefix('ftjob-')}"
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.hyperparameters.n_epochs == 1 and done.hyperparameters.batch_size == 2
    assert done.metadata == {"team": "data"} and done.finished_at >= done.created_at

    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and all(isinstance(e.data["train_loss"], float) for e in metrics)
    assert any("validated" in e.message for e in events)
    first_page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    second_page = client.fine_tuning.jobs.list_events(job.id, limit=2, after=first_page.data[-1].id)
    assert first_page.has_more and {e.id for e in first_page.data}.isdisjoint(e.id for e in second_page.data)

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].fine_tuned_model_checkpoint.startswith(done.fine_tuned_model)
    assert all(c.step_number >= 1 for c in checkpoints)

    evaluation = done.model_extra["evaluation"]
    assert evaluation["valid_loss_before"] > 0 and evaluation["valid_loss_after"] > 0
    assert len(evaluation["samples"]) >= 1

    names = {client.files.retrieve(f).filename: f for f in done.result_files}
    adapter = next(f for name, f in names.items() if name.endswith("adapter.tar.gz"))
    with tarfile.open(fileobj=io.BytesIO(client.files.content(adapter).read())) as tar:
        members = {Path(m).name for m in tar.getnames()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= members
    assert any(name.endswith("merged.tar") for name in names)

    listed = client.fine_tuning.jobs.list(limit=10)
    assert listed.data[0].id == job.id
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.ConflictError):  # a job still points at it
        client.files.delete(training.id)


def test_a_bad_training_file_fails_the_job_naming_the_line(client: openai.OpenAI) -> None:
    lines = chat_lines(PAIRS).split(b"\n")
    lines[4] = json.dumps({"messages": [{"role": "robot", "content": "beep"}]}).encode()
    training = client.files.create(file=("train.jsonl", b"\n".join(lines)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=DEFAULT_MODEL_NAME, training_file=training.id)
    failed = wait_for(client, job.id, {"failed", "succeeded", "cancelled"}, timeout=120)
    assert failed.status == "failed"
    assert failed.error.param == "training_file" and failed.error.code == "invalid_file_format"
    assert "line 5" in failed.error.message and "robot" in failed.error.message

    no_answer = [json.dumps({"messages": [{"role": "user", "content": q}]}) for q, _ in PAIRS]
    training = client.files.create(file=("q.jsonl", "\n".join(no_answer).encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=DEFAULT_MODEL_NAME, training_file=training.id)
    failed = wait_for(client, job.id, {"failed", "succeeded", "cancelled"}, timeout=120)
    assert failed.error.code == "missing_assistant_message" and "line 1" in failed.error.message

    long = [("word " * 400, "ok")] + PAIRS
    training = client.files.create(file=("long.jsonl", chat_lines(long)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=DEFAULT_MODEL_NAME, training_file=training.id)
    failed = wait_for(client, job.id, {"failed", "succeeded", "cancelled"}, timeout=120)
    assert failed.error.code == "exceeds_max_length" and "line 1" in failed.error.message


def test_cancel_stops_a_running_trainer(database_url: str, vllm_checkpoint: Path, tmp_path: Path) -> None:
    with sdk_client(database_url, vllm_checkpoint, tmp_path) as client:
        check_cancel(client)


def check_cancel(client: openai.OpenAI) -> None:
    training = client.files.create(file=("train.jsonl", chat_lines(PAIRS * 20)), purpose="fine-tune")
    queued = client.fine_tuning.jobs.create(model=DEFAULT_MODEL_NAME, training_file=training.id)
    waiting = client.fine_tuning.jobs.create(model=DEFAULT_MODEL_NAME, training_file=training.id)
    wait_for(client, queued.id, {"running"}, timeout=120)
    # One training slot: the second job waits, and is cancelled at once.
    wait_for(client, waiting.id, {"queued"}, timeout=120)
    assert client.fine_tuning.jobs.cancel(waiting.id).status == "cancelled"

    deadline = time.monotonic() + 300
    while not any(
        e.type == "metrics" for e in client.fine_tuning.jobs.list_events(queued.id, limit=100).data
    ):
        assert time.monotonic() < deadline, "the trainer never reported a step"
        time.sleep(0.25)
    asked = time.monotonic()
    client.fine_tuning.jobs.cancel(queued.id)
    cancelled = wait_for(client, queued.id, {"cancelled", "failed", "succeeded"}, timeout=60)
    assert cancelled.status == "cancelled"
    assert time.monotonic() - asked < 30
    trainer_pids = [
        int(e.message.split("pid ")[1].split(")")[0])
        for e in client.fine_tuning.jobs.list_events(queued.id, limit=100).data
        if e.message.startswith("Trainer started")
    ]
    assert trainer_pids
    for pid in trainer_pids:
        assert not Path(f"/proc/{pid}").exists(), f"trainer {pid} is still there (a zombie or alive)"
