"""End to end with real models: the embedded llama.cpp model in-process, and real OpenAI-compatible HTTP servers
(the project's test server and llama-cpp-python's own), each as a named backend with requests in flight
concurrently, as in production.

Seeds go in through the API, small jobs run, and what was stored must add up to the job's counters. The 135M
model is weak and its tokens differ from one CPU to the next, so every assertion holds for ANY output: the
bookkeeping, that requests carried the schema and ran concurrently, that every reply was recorded with what
parsing made of it, and that a reply the grammar closed follows the schema.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from app.core.db import PROJECT_ROOT, normalize_database_url
from app.generation.models import GenerationJob, GenerationReply
from tests.support.service import (
    all_items,
    assert_counters_match_items,
    make_settings,
    running_service,
    wait_for_job,
)

pytestmark = [pytest.mark.slow, pytest.mark.model]

DEFAULT_SEEDS = PROJECT_ROOT / "seeds" / "default.jsonl"
SMALL_JOB = {"count": 2, "max_prompts": 4, "tasks_per_prompt": 3, "max_tokens": 400, "language": "en"}


def _run_job(client, body: dict) -> tuple[dict, list[dict], list[dict]]:  # noqa: ANN001
    dataset_id = client.post("/v1/datasets", json={"name": "real"}).json()["id"]
    upload = client.post(
        f"/v1/datasets/{dataset_id}/seeds", files={"file": ("default.jsonl", DEFAULT_SEEDS.read_bytes())}
    )
    assert upload.status_code == 201, upload.text
    response = client.post(f"/v1/datasets/{dataset_id}/generations", json=body)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"], timeout=900)
    replies = client.get(f"/v1/generations/{job['id']}/replies", params={"limit": 500}).json()
    return job, all_items(client, dataset_id), replies


def _check(job: dict, items: list[dict], replies: list[dict], model: str, *, mode: str) -> None:
    assert job["status"] == "succeeded", job
    counters = job["counters"]
    assert counters["requests"] == len(replies) >= 1 and counters["prompts"] >= 1
    assert counters["raw"] >= counters["parsed"] and counters["completion_tokens"] > 0
    assert counters["errors"] == sum(1 for r in replies if r["error"])
    assert_counters_match_items(job, items)
    assert sum(r["parsed"] for r in replies) == counters["parsed"]
    assert all(item["model"] == model for item in items)
    for reply in replies:
        for choice in reply["choices"]:
            assert choice["items"] + choice["unparsed"] >= 0
            if mode == "chat" and choice["finish_reason"] == "stop" and not choice["truncated"]:
                # The grammar closed the JSON, so it follows the schema whatever the model wrote inside it.
                tasks = json.loads(choice["text"], strict=False)["tasks"]
                assert 1 <= len(tasks) <= SMALL_JOB["tasks_per_prompt"]
                assert choice["items"] + choice["unparsed"] == len(tasks)
    for item in items:
        assert item["instruction"].strip()
        if item["status"] == "pending":
            assert item["filter_reason"] is None
            assert item["nearest"] is None or item["nearest"]["rouge_l"] <= 0.7


def test_embedded_model_through_the_api(tmp_path) -> None:  # noqa: ANN001
    with running_service(make_settings(f"sqlite:///{tmp_path / 'e2e.db'}")) as client:
        job, items, replies = _run_job(client, SMALL_JOB)
    assert job["backend"] == "local"
    _check(job, items, replies, "SmolLM2-135M-Instruct", mode="chat")


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_the_project_test_server_as_a_named_backend_with_requests_in_flight(
    tmp_path, openai_server, mode
) -> None:  # noqa: ANN001
    backends = {"srv": openai_server.backend_settings(mode=mode, max_in_flight=2, max_batch=2).model_dump()}
    settings = make_settings(f"sqlite:///{tmp_path / 'server.db'}", backends=backends)
    with running_service(settings) as client:
        job, items, replies = _run_job(client, {**SMALL_JOB, "backend": "srv", "prompts_per_request": 1})
        peak = _peak_in_flight(client, "srv")
    assert peak == 2  # two requests at a time, as the backend allows
    _check(job, items, replies, openai_server.model, mode=mode)


def test_llama_cpp_python_server_as_a_named_backend_with_requests_in_flight(
    tmp_path, llama_cpp_server
) -> None:  # noqa: ANN001
    backends = {"llama": llama_cpp_server.backend_settings(max_in_flight=3).model_dump()}
    settings = make_settings(f"sqlite:///{tmp_path / 'llama.db'}", backends=backends, default_backend="llama")
    with running_service(settings) as client:
        job, items, replies = _run_job(client, {**SMALL_JOB, "max_prompts": 6})
        peak = _peak_in_flight(client, "llama")
    assert peak == 3
    _check(job, items, replies, llama_cpp_server.model, mode="chat")


def test_a_server_that_is_down_fails_the_job_past_its_error_budget(tmp_path) -> None:  # noqa: ANN001
    backends = {
        "down": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "max_retries": 1, "backoff_max": 0.1}
    }
    settings = make_settings(
        f"sqlite:///{tmp_path / 'down.db'}", backends=backends, default_backend="down", job_max_attempts=1
    )
    with running_service(settings) as client:
        job, items, replies = _run_job(client, {"count": 2, "max_errors": 1})
    assert job["status"] == "failed" and "127.0.0.1:9" in job["error"] and "error budget" in job["error"]
    assert items == [] and job["counters"]["parsed"] == 0 and all(r["error"] for r in replies)


def _peak_in_flight(client, name: str) -> int:  # noqa: ANN001
    async def get() -> Any:
        return await client.app.state.backends.get(name)

    return client.portal.call(get).peak_in_flight


def test_cli_generate_with_the_embedded_model(tmp_path) -> None:  # noqa: ANN001
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "SPROUT_DATABASE_URL": url}
    sprout = [sys.executable, "-m", "app.cli"]
    imported = subprocess.run(
        [*sprout, "import-seeds", str(DEFAULT_SEEDS), "--dataset", "cli"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr
    assert "imported" in imported.stdout
    generated = subprocess.run(
        [
            *sprout,
            "generate",
            "--dataset",
            "cli",
            "--count",
            "1",
            "--max-prompts",
            "2",
            "--tasks-per-prompt",
            "2",
            "--max-tokens",
            "400",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert generated.returncode == 0, generated.stderr
    assert "generation job 1: succeeded" in generated.stdout and "accepted" in generated.stdout
    summary = {label: int(n) for label, n in re.findall(r"│ ([a-z -]+?)\s*│\s*(\d+)\s*│", generated.stdout)}
    assert 1 <= summary["requests"] <= 2 and summary["prompts sent"] == summary["requests"]
    listed = subprocess.run(
        [*sprout, "items", "list", "--dataset", "cli", "--json", "--limit", "1000"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == summary["parsed"]
    engine = create_engine(normalize_database_url(url))
    with engine.connect() as conn:
        job = conn.execute(select(GenerationJob.__table__)).one()
        replies = conn.execute(select(GenerationReply.__table__).order_by(GenerationReply.request_no)).all()
    engine.dispose()
    # The model wrote something (zero items may be parsed from it, but never zero tokens) ...
    assert job.requests == summary["requests"] and job.prompt_tokens > 0 and job.completion_tokens > 0
    # ... and every request left its reply, whatever the model wrote: what came back, or why it failed.
    assert [r.request_no for r in replies] == list(range(job.requests))
    assert sum(r.completion_tokens for r in replies) == job.completion_tokens
    assert sum(1 for r in replies if r.error) == job.errors == summary["errors"]
    for reply in replies:
        if reply.error is None:  # a reply that counts as answered held text from which an item was read
            assert reply.completion_tokens > 0 and reply.parsed >= 1
            assert reply.choices and all(c["text"] for c in reply.choices)
        else:  # one choice per request (--choices 1): a failed request yielded nothing at all
            assert reply.parsed == 0 and reply.accepted == 0
