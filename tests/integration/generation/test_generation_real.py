"""End to end with real models: the embedded llama.cpp model in-process, and a real OpenAI-compatible HTTP server.

Import the project's seeds through the API, run small generation jobs, and check that what was stored adds up to
the job's counters. The 135M model is weak, so the assertions are about bookkeeping, not about how many items pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from app.core.config import PROJECT_ROOT, LLMConfig
from tests.support.service import (
    all_items,
    assert_counters_match_items,
    make_settings,
    running_service,
    wait_for_job,
)

pytestmark = [pytest.mark.slow, pytest.mark.model]

DEFAULT_SEEDS = PROJECT_ROOT / "seeds" / "default.jsonl"
SMALL_JOB = {"count": 2, "max_prompts": 3, "prompts_per_request": 2, "tasks_per_prompt": 4, "max_tokens": 600}


def _run_job(client, body: dict) -> tuple[dict, list[dict]]:
    dataset_id = client.post("/v1/datasets", json={"name": "real"}).json()["id"]
    upload = client.post(
        f"/v1/datasets/{dataset_id}/seeds", files={"file": ("default.jsonl", DEFAULT_SEEDS.read_bytes())}
    )
    assert upload.status_code == 201, upload.text
    response = client.post(f"/v1/datasets/{dataset_id}/generations", json=body)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"], timeout=600)
    return job, all_items(client, dataset_id)


def _check(job: dict, items: list[dict], model: str, *, min_parsed: int = 1) -> None:
    assert job["status"] == "succeeded", job
    counters = job["counters"]
    assert (
        counters["prompts"] >= 1
        and counters["raw"] >= 1
        and counters["raw"] >= counters["parsed"] >= min_parsed
    )
    assert counters["completion_tokens"] > 0
    assert_counters_match_items(job, items)
    assert all(item["model"] == model for item in items)
    for item in items:
        assert item["instruction"].strip()
        if item["status"] == "pending":
            # A kept item's nearest neighbour is named only when it is close (above the index's report floor).
            assert item["filter_reason"] is None
            assert item["nearest"] is None or item["nearest"]["rouge_l"] <= 0.7


def test_embedded_model_through_the_api(tmp_path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'e2e.db'}", llm=LLMConfig(backend="llamacpp"))
    with running_service(settings) as client:
        job, items = _run_job(client, SMALL_JOB)
    _check(job, items, "SmolLM2-135M-Instruct")


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_real_openai_compatible_server_through_the_api(tmp_path, openai_server, mode) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'server.db'}", llm=openai_server.llm_config(mode=mode))
    with running_service(settings) as client:
        job, items = _run_job(client, {**SMALL_JOB, "language": "en"})
    # Chat replies follow a JSON schema, so they always parse; the 135M model's free-form numbered lists may not.
    _check(job, items, openai_server.model, min_parsed=1 if mode == "chat" else 0)


def test_server_that_is_down_fails_the_job_cleanly(tmp_path) -> None:
    down = LLMConfig(backend="openai_compat", base_url="http://127.0.0.1:9/v1", max_retries=1, timeout=2)
    with running_service(make_settings(f"sqlite:///{tmp_path / 'down.db'}", llm=down)) as client:
        job, items = _run_job(client, {"count": 2})
    assert job["status"] == "failed" and "127.0.0.1:9" in job["error"]
    assert items == [] and job["counters"]["parsed"] == 0


def test_cli_generate_with_the_embedded_model(tmp_path) -> None:
    env = {
        **os.environ,
        "SPROUT_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "SPROUT_LLM__BACKEND": "llamacpp",
    }
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
            # Two tasks in 700 tokens: room for the JSON reply to close, so its tasks parse.
            "--tasks-per-prompt",
            "2",
            "--max-tokens",
            "700",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert generated.returncode == 0, generated.stderr
    assert "generation job 1: succeeded" in generated.stdout and "accepted" in generated.stdout
    listed = subprocess.run(
        [*sprout, "items", "list", "--dataset", "cli", "--json", "--limit", "1000"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    parsed = int(re.search(r"parsed\s*│\s*(\d+)", generated.stdout).group(1))  # from the summary table
    # A truncated reply can leave no whole task, so only the agreement between table and listing is certain.
    assert len(listed.stdout.splitlines()) == parsed
