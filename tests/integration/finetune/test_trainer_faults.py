"""A trainer that crashes or runs out of memory fails its job with its error, and leaves no process behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import openai
import pytest

from app.core.config import DEFAULT_MODEL_NAME, FinetuneModelSettings
from tests.integration.finetune.test_openai_sdk import PAIRS, chat_lines, sdk_client, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.model]


def trainer_pids(client: openai.OpenAI, job_id: str) -> list[int]:
    events = client.fine_tuning.jobs.list_events(job_id, limit=100).data
    return [
        int(e.message.split("pid ")[1].split(")")[0])
        for e in events
        if e.message.startswith("Trainer started")
    ]


def test_a_trainer_that_crashes_fails_the_job_with_its_error(
    database_url: str, vllm_checkpoint: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(vllm_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(
        b"not a safetensors file"
    )  # the tokenizer loads, the weights do not
    with sdk_client(
        database_url,
        vllm_checkpoint,
        tmp_path,
        finetune_models={DEFAULT_MODEL_NAME: FinetuneModelSettings(path=str(broken), max_length=128)},
    ) as client:
        training = client.files.create(file=("t.jsonl", chat_lines(PAIRS)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=DEFAULT_MODEL_NAME, training_file=training.id)
        failed = wait_for(client, job.id, {"succeeded", "failed", "cancelled"}, timeout=300)
        assert failed.status == "failed"
        assert failed.error.code == "trainer_failed"
        assert "exited with code" in failed.error.message and "safetensor" in failed.error.message.lower()
        pids = trainer_pids(client, job.id)
        assert pids and not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_a_trainer_over_the_memory_limit_is_stopped_and_fails_the_job_as_out_of_memory(
    database_url: str, vllm_checkpoint: Path, tmp_path: Path
) -> None:
    # Training this model takes well over a gigabyte; the guard stops the trainer once it passes 600 MB.
    with sdk_client(
        database_url, vllm_checkpoint, tmp_path, finetune_memory_limit_mb=600, finetune_max_steps=3
    ) as client:
        training = client.files.create(file=("t.jsonl", chat_lines(PAIRS)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=DEFAULT_MODEL_NAME, training_file=training.id)
        failed = wait_for(client, job.id, {"succeeded", "failed", "cancelled"}, timeout=300)
        assert failed.status == "failed", failed
        assert failed.error.code == "out_of_memory", failed.error
        assert "over the limit of 600 MB" in failed.error.message
        pids = trainer_pids(client, job.id)
        assert pids and not any(Path(f"/proc/{pid}").exists() for pid in pids)
