"""A tuned model end to end: trained here, loaded on the real vLLM server (LoRA at run time), named by a
generation job, and loaded again after the server forgot it; and the remote trainer, forwarding a job to a
second Sprout instance over real HTTP and mirroring it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from app.auth.roles import Role
from app.core.config import DEFAULT_MODEL_NAME, FinetuneModelSettings
from app.finetune.models import LoraAdapter
from tests.integration.finetune.test_openai_sdk import PAIRS, chat_lines, wait_for
from tests.support.app_server import serving
from tests.support.service import bearer, make_settings, new_user_token
from tests.support.vllm_server import VLLMServer

pytestmark = [pytest.mark.slow, pytest.mark.model]

SEEDS = (
    b'{"instruction": "Name a colour of the sky at noon.", "instances": [{"input": "", "output": "Blue"}]}'
)


def served_models(server: VLLMServer) -> set[str]:
    return {m["id"] for m in httpx.get(f"{server.base_url}/models", timeout=30).json()["data"]}


def generate(base_url: str, token: str, dataset_id: int, body: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(base_url=base_url, headers=bearer(token), timeout=60) as http:
        job = http.post(f"/v1/datasets/{dataset_id}/generations", json=body)
        assert job.status_code == 202, job.text
    return wait_for_generation(base_url, token, job.json()["id"])


def wait_for_generation(base_url: str, token: str, job_id: int) -> dict[str, Any]:
    with httpx.Client(base_url=base_url, headers=bearer(token), timeout=60) as http:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            found = http.get(f"/v1/generations/{job_id}").json()
            if found["status"] in ("succeeded", "failed", "cancelled"):
                return found
            time.sleep(0.5)
    raise AssertionError(f"generation job never finished: {found}")


@pytest.mark.vllm
def test_a_tuned_adapter_is_served_by_vllm_and_named_by_a_generation_job(
    tmp_path: Path, vllm_checkpoint: Path, vllm_server: VLLMServer
) -> None:
    # One request at a time, so a job still has requests to send after the adapter vanished mid-job.
    backends = {
        "vllm": {
            "kind": "openai",
            "base_url": vllm_server.base_url,
            "model": vllm_server.model,
            "max_in_flight": 1,
        }
    }
    settings = make_settings(
        f"sqlite:///{tmp_path / 'serve.db'}",
        backends=backends,
        default_backend="vllm",
        finetune_models={
            DEFAULT_MODEL_NAME: FinetuneModelSettings(
                path=str(vllm_checkpoint), max_length=128, serve_backend="vllm"
            )
        },
        finetune_dir=tmp_path / "finetune",
        finetune_max_steps=2,
    )
    with serving(settings) as served:
        token = new_user_token(served.app, Role.admin)
        sdk = openai.OpenAI(base_url=f"{served.base_url}/v1", api_key=token, max_retries=0)
        training = sdk.files.create(file=("t.jsonl", chat_lines(PAIRS)), purpose="fine-tune")
        job = sdk.fine_tuning.jobs.create(
            model=DEFAULT_MODEL_NAME, training_file=training.id, suffix="served"
        )
        done = wait_for(sdk, job.id, {"succeeded", "failed", "cancelled"})
        assert done.status == "succeeded", done.error
        tuned = done.fine_tuned_model
        try:
            _use_the_tuned_model(served, vllm_server, token, tuned)
        finally:  # unload it, so the session's other tests see the server as they expect
            httpx.post(f"{vllm_server.base_url}/unload_lora_adapter", json={"lora_name": tuned}, timeout=60)


def _use_the_tuned_model(served: Any, vllm_server: VLLMServer, token: str, tuned: str) -> None:
    def registered() -> str | None:
        with served.app.state.sessions() as session:
            return session.scalar(select(LoraAdapter.backend).where(LoraAdapter.name == tuned))

    deadline = time.monotonic() + 60
    # Right after the job succeeded: loaded on the server first, then remembered in the database.
    while tuned not in served_models(vllm_server) or registered() is None:
        assert time.monotonic() < deadline, "the adapter was never loaded on vLLM and registered"
        time.sleep(0.5)
    assert registered() == "vllm"
    with httpx.Client(base_url=served.base_url, headers=bearer(token), timeout=60) as http:
        dataset_id = http.post("/v1/datasets", json={"name": "tuned"}).json()["id"]
        assert (
            http.post(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("s.jsonl", SEEDS)}).status_code
            == 201
        )
        unknown = http.post(f"/v1/datasets/{dataset_id}/generations", json={"model": "ft:nothing"})
        assert unknown.status_code == 422 and "registered" in unknown.text

    body = {
        "model": tuned,
        "count": 1,
        "max_prompts": 2,
        "tasks_per_prompt": 2,
        "max_tokens": 96,
        "language": "en",
    }
    first = generate(served.base_url, token, dataset_id, body)
    assert first["status"] == "succeeded" and first["counters"]["requests"] >= 1, first
    assert first["counters"]["completion_tokens"] > 0

    # The server forgets its adapters when it restarts; unloading it has the same effect here.
    unloaded = httpx.post(
        f"{vllm_server.base_url}/unload_lora_adapter", json={"lora_name": tuned}, timeout=60
    )
    assert unloaded.status_code == 200, unloaded.text
    assert tuned not in served_models(vllm_server)
    second = generate(served.base_url, token, dataset_id, body)
    assert second["status"] == "succeeded", second
    assert tuned in served_models(vllm_server)  # loaded again from what the database remembers

    # Mid-job: the adapter vanishes (a restart) after the job's first reply; the next request's 404 loads it
    # again and the job goes on, without a failed request.
    third = {**body, "count": 1000, "max_prompts": 4}
    with httpx.Client(base_url=served.base_url, headers=bearer(token), timeout=60) as http:
        job_id = http.post(f"/v1/datasets/{dataset_id}/generations", json=third).json()["id"]
        deadline = time.monotonic() + 300
        while http.get(f"/v1/generations/{job_id}").json()["counters"]["requests"] < 1:
            assert time.monotonic() < deadline, "the job never got its first reply"
            time.sleep(0.2)
        httpx.post(f"{vllm_server.base_url}/unload_lora_adapter", json={"lora_name": tuned}, timeout=60)
    finished = wait_for_generation(served.base_url, token, job_id)
    assert finished["status"] == "succeeded", finished
    # The request in flight when the adapter went may fail with it (the server drops it); the ones after it
    # meet the 404, the adapter is loaded again and they are answered.
    assert finished["counters"]["requests"] == 4 and finished["counters"]["errors"] <= 1, finished
    with httpx.Client(base_url=served.base_url, headers=bearer(token), timeout=60) as http:
        replies = http.get(f"/v1/generations/{job_id}/replies").json()
    assert replies[-1]["error"] is None and replies[-1]["request_no"] == 3, replies
    assert tuned in served_models(vllm_server)


def test_the_remote_trainer_forwards_to_another_sprout_and_mirrors_it(
    tmp_path: Path, vllm_checkpoint: Path
) -> None:
    trainer_settings = make_settings(
        f"sqlite:///{tmp_path / 'remote.db'}",
        finetune_models={
            DEFAULT_MODEL_NAME: FinetuneModelSettings(
                path=str(vllm_checkpoint), max_length=128, context_length=256
            )
        },
        finetune_dir=tmp_path / "remote-finetune",
        finetune_max_steps=2,
    )
    with serving(trainer_settings) as remote:
        remote_token = new_user_token(remote.app, Role.service)
        forwarding = make_settings(
            f"sqlite:///{tmp_path / 'front.db'}",
            finetune_models={
                "smol-remote": FinetuneModelSettings(
                    trainer="remote",
                    base_url=f"{remote.base_url}/v1",
                    api_key=remote_token,
                    remote_model=DEFAULT_MODEL_NAME,
                    poll_seconds=0.5,
                )
            },
        )
        with serving(forwarding) as front:
            sdk = openai.OpenAI(
                base_url=f"{front.base_url}/v1",
                api_key=new_user_token(front.app, Role.service),
                max_retries=0,
            )
            training = sdk.files.create(file=("t.jsonl", chat_lines(PAIRS)), purpose="fine-tune")
            job = sdk.fine_tuning.jobs.create(model="smol-remote", training_file=training.id, suffix="fwd")
            done = wait_for(sdk, job.id, {"succeeded", "failed", "cancelled"})
            assert done.status == "succeeded", done.error
            assert done.model_extra["trainer"] == "remote"
            assert done.fine_tuned_model.startswith(f"ft:{DEFAULT_MODEL_NAME}:sprout:fwd:")
            mirrored = sdk.fine_tuning.jobs.list_events(job.id, limit=100).data
            assert any(e.type == "metrics" for e in mirrored)  # the remote trainer's steps, mirrored
            assert any("Forwarded to the remote trainer" in e.message for e in mirrored)
            assert sdk.fine_tuning.jobs.checkpoints.list(job.id).data

            # The remote side sees one job, made by the forwarder, and its own files.
            theirs = openai.OpenAI(base_url=f"{remote.base_url}/v1", api_key=remote_token, max_retries=0)
            (remote_job,) = theirs.fine_tuning.jobs.list().data
            assert remote_job.fine_tuned_model == done.fine_tuned_model
            assert remote_job.metadata == {"sprout_job": job.id}

            # A file the remote refuses (an example longer than its model's context: only it counts tokens)
            # fails the job here with the remote's error.
            long = chat_lines([("word " * 400, "ok"), *PAIRS])
            training = sdk.files.create(file=("long.jsonl", long), purpose="fine-tune")
            job = sdk.fine_tuning.jobs.create(model="smol-remote", training_file=training.id)
            failed = wait_for(sdk, job.id, {"succeeded", "failed", "cancelled"})
            assert failed.status == "failed"
            assert failed.error.code == "exceeds_max_length" and "line 1" in failed.error.message
            assert json.loads(failed.model_dump_json())["error"]["param"] == "training_file"
