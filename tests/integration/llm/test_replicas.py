"""Two REAL OpenAI-compatible servers (tests/support/sim_server.py, each its own process, vLLM's shapes and its
GET /health) as the replicas of one named backend: requests spread over both; a stopped server is taken out
by the health probe and put back when a server listens on its port again; and the drill: one replica
SIGKILLed while a generation job has requests in flight on it. The job finishes, and the metrics show the
failover."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from app.core.config import BackendSettings
from app.llm import ChatMessage, SamplingParams
from app.llm.openai_compat import OpenAICompatBackend
from app.llm.replicas import replica_label
from tests.support.service import (
    all_items,
    assert_counters_match_items,
    make_settings,
    running_service,
    wait_for_job,
)
from tests.support.sim_server import SimServer, running_sim_server

CHAT = [ChatMessage("user", "Write one task.")]
SCHEMA = {
    "type": "object",
    "properties": {"tasks": {"type": "array", "maxItems": 2, "items": {"type": "object"}}},
}
SEEDS = (
    b'{"instruction": "Give three tips for staying focused while studying.", '
    b'"instances": [{"input": "", "output": "Silence your phone."}]}\n'
)


def sim_requests(sim: SimServer) -> int:
    """Generation requests the server itself counted (its /metrics)."""
    text = httpx.get(sim.metrics_url, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("sim:http_requests_total{") and "/completions" in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def replicas_of(*sims: SimServer, **overrides: Any) -> BackendSettings:
    return BackendSettings(
        kind="openai",
        model=sims[0].model,
        base_urls=[s.base_url for s in sims],
        **{"health_interval": 0.2, "health_timeout": 1.0, "backoff_max": 0.2, **overrides},
    )


async def until(condition: Any, timeout: float, what: str) -> float:
    """Wait (polling) until condition() holds; the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
def two_sims() -> Iterator[tuple[SimServer, SimServer]]:
    with (
        running_sim_server(latency="lognormal", median=0.2, sigma=0.1, seed=1) as a,
        running_sim_server(latency="lognormal", median=0.2, sigma=0.1, seed=2) as b,
    ):
        yield a, b


def test_requests_spread_over_both_replicas_by_least_in_flight(two_sims: tuple[SimServer, SimServer]) -> None:
    a, b = two_sims
    name = f"spread-{uuid.uuid4().hex[:6]}"
    params = SamplingParams(max_tokens=64)

    async def go() -> list[int]:
        backend = OpenAICompatBackend(name, replicas_of(a, b, max_in_flight=8), backoff_initial=0.01)
        try:
            replies = await asyncio.gather(
                *(backend.chat(CHAT, params, json_schema=SCHEMA) for _ in range(8))
            )
            assert all(len(r.choices) == 1 and r.choices[0].text for r in replies)
            # One at a time, each finds both idle: they alternate.
            for _ in range(4):
                await backend.chat(CHAT, params, json_schema=SCHEMA)
            health = await backend.health()
            assert health["ok"] and [r["ok"] for r in health["replicas"]] == [True, True]
            return [r.answered for r in backend.replicas.replicas]
        finally:
            await backend.aclose()

    answered = asyncio.run(go())
    assert answered == [6, 6]
    assert (sim_requests(a), sim_requests(b)) == (6, 6)  # what the servers saw agrees
    for sim in (a, b):
        labels = {"backend": name, "replica": replica_label(sim.base_url)}
        assert metric("sprout_llm_request_seconds_count", **labels) == 6
        assert metric("sprout_llm_tokens_total", **labels, type="completion") > 0
        assert metric("sprout_llm_replica_up", **labels) == 1
        assert metric("sprout_llm_in_flight", **labels) == 0


def test_a_stopped_replica_is_taken_out_and_put_back_when_a_server_listens_there_again() -> None:
    name = f"probe-{uuid.uuid4().hex[:6]}"
    interval = 0.2
    params = SamplingParams(max_tokens=16)

    async def go(first: SimServer, b: SimServer) -> None:
        url_a = first.base_url
        settings = BackendSettings(
            kind="openai",
            model=b.model,
            base_urls=[url_a, b.base_url],
            health_interval=interval,
            health_timeout=1.0,
            backoff_max=0.2,
        )
        a_labels = {"backend": name, "replica": replica_label(url_a)}
        soon = 5 * interval + settings.health_timeout  # "within a few health intervals"
        backend = OpenAICompatBackend(name, settings, backoff_initial=0.01)
        ra, rb = backend.replicas.replicas
        try:
            await asyncio.gather(*(backend.chat(CHAT, params) for _ in range(4)))  # starts the probe
            assert ra.up and rb.up and ra.answered == rb.answered == 2

            os.kill(
                first.pid, signal.SIGTERM
            )  # stopped (gracefully: nothing in flight; new connections refused)
            assert await until(lambda: not ra.up, soon, "taken out") <= soon
            assert "health check" in (ra.reason or "")
            assert metric("sprout_llm_replica_up", **a_labels) == 0
            assert metric("sprout_llm_replica_ejections_total", **a_labels) == 1
            before = rb.answered
            await asyncio.gather(*(backend.chat(CHAT, params) for _ in range(6)))
            assert rb.answered == before + 6 and ra.failures == 0  # none was even tried on a

            with running_sim_server(port=first.port):  # a server on the same port again
                assert await until(lambda: ra.up, soon, "put back") <= soon
                assert metric("sprout_llm_replica_up", **a_labels) == 1
                answered = ra.answered
                await asyncio.gather(*(backend.chat(CHAT, params) for _ in range(4)))
                assert ra.answered == answered + 2  # in rotation again: its share of the load
        finally:
            await backend.aclose()

    with running_sim_server() as first, running_sim_server(latency="lognormal", median=0.2, sigma=0.1) as b:
        asyncio.run(go(first, b))


@pytest.mark.drill
@pytest.mark.slow
def test_drill_a_replica_killed_mid_job_costs_retries_not_the_job(
    database_url: str, shared_data: Path
) -> None:
    count = 40
    with (
        running_sim_server(
            pool=str(shared_data / "bench_instructions.jsonl.gz"),
            latency="lognormal",
            median=0.4,
            sigma=0.3,
            seed=5,
        ) as a,
        running_sim_server(
            pool=str(shared_data / "bench_instructions.jsonl.gz"),
            latency="lognormal",
            median=0.4,
            sigma=0.3,
            seed=6,
        ) as b,
    ):
        name = f"fleet-{uuid.uuid4().hex[:6]}"
        backend = replicas_of(a, b, max_in_flight=8, max_retries=8, backoff_max=0.5)
        settings = make_settings(database_url, backends={name: backend.model_dump()}, default_backend=name)
        a_labels = {"backend": name, "replica": replica_label(a.base_url)}
        b_labels = {"backend": name, "replica": replica_label(b.base_url)}
        with running_service(settings) as client:
            dataset_id = client.post("/v1/datasets", json={"name": "fleet"}).json()["id"]
            seeded = client.post(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("s.jsonl", SEEDS)})
            assert seeded.status_code == 201, seeded.text
            job_id = client.post(
                f"/v1/datasets/{dataset_id}/generations",
                # One task per reply: the job stops at exactly `count` (a reply's items are accepted whole).
                json={"count": count, "max_prompts": 600, "tasks_per_prompt": 1},
            ).json()["id"]

            # Live work on replica a: requests of this job in flight there, some already answered by both.
            deadline = time.monotonic() + 60
            while not (
                metric("sprout_llm_in_flight", **a_labels) >= 2
                and metric("sprout_llm_request_seconds_count", **b_labels) >= 2
            ):
                assert time.monotonic() < deadline, "the job never had requests in flight on replica a"
                time.sleep(0.005)
            in_flight_at_kill = metric("sprout_llm_in_flight", **a_labels)
            os.kill(a.pid, signal.SIGKILL)
            answered_by_b_at_kill = metric("sprout_llm_request_seconds_count", **b_labels)
            accepted_at_kill = client.get(f"/v1/generations/{job_id}").json()["counters"]["accepted"]

            job = wait_for_job(client, job_id, timeout=120)
            items = all_items(client, dataset_id)
            replies = client.get(f"/v1/generations/{job_id}/replies", params={"limit": 500}).json()
            up_a = metric("sprout_llm_replica_up", **a_labels)
            up_b = metric("sprout_llm_replica_up", **b_labels)

    assert in_flight_at_kill >= 1 and accepted_at_kill < count  # the kill hit live work, mid-job
    assert job["status"] == "succeeded", job
    assert job["counters"]["accepted"] == count
    assert job["counters"]["errors"] == 0  # every request the kill hit was retried on b, none lost
    assert_counters_match_items(job, items)
    assert len({r["request_no"] for r in replies}) == len(replies) == job["counters"]["requests"]
    copies = Counter((i["reply_id"], i["instruction"], i["input"], i["output"]) for i in items)
    assert max(copies.values()) == 1  # no item stored twice

    # The metrics show the failover: a's attempts failed and it was taken out (and stays out: it is dead),
    # and b answered what a no longer could.
    a_errors = metric("sprout_llm_errors_total", **a_labels, kind="connection") + metric(
        "sprout_llm_errors_total", **a_labels, kind="timeout"
    )
    assert a_errors >= 1
    assert metric("sprout_llm_replica_ejections_total", **a_labels) >= 1
    assert up_a == 0 and up_b == 1
    assert metric("sprout_llm_request_seconds_count", **b_labels) > answered_by_b_at_kill
    assert metric("sprout_llm_errors_total", **b_labels, kind="connection") == 0
