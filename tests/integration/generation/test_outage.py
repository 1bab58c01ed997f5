"""A model server that becomes unreachable in the middle of a job (a TCP proxy owned by the test cuts every
connection and refuses new ones): requests are retried, the job resumes when the server is back, and no item
is stored twice. The same drill against a real vLLM server is in tests/integration/llm/test_vllm.py."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.support.service import (
    all_items,
    assert_counters_match_items,
    make_settings,
    running_service,
    wait_for_job,
)
from tests.support.sim_server import running_sim_server
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

SEEDS = b'{"instruction": "Give three tips for staying focused while studying.", "instances": [{"input": "", "output": "Silence your phone."}]}\n'


def test_the_job_rides_out_a_server_outage_and_stores_nothing_twice(database_url: str, shared_data) -> None:  # noqa: ANN001
    with (
        running_sim_server(
            pool=str(shared_data / "bench_instructions.jsonl.gz"),
            latency="lognormal",
            median=0.2,
            sigma=0.3,
            seed=4,
        ) as sim,
        TcpProxy("127.0.0.1", sim.port) as proxy,
    ):
        # Retries wide enough to bridge a few seconds: 40 attempts, at most 0.5 s apart.
        backend = sim.backend_settings(
            base_url=proxy.url_for("/v1"), max_in_flight=4, max_retries=40, backoff_max=0.5
        )
        settings = make_settings(database_url, backends={"sim": backend.model_dump()}, default_backend="sim")
        with running_service(settings) as client:
            dataset_id = client.post("/v1/datasets", json={"name": "outage"}).json()["id"]
            client.post(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("s.jsonl", SEEDS)})
            job_id = client.post(
                f"/v1/datasets/{dataset_id}/generations", json={"count": 60, "max_prompts": 400}
            ).json()["id"]
            while client.get(f"/v1/generations/{job_id}").json()["counters"]["requests"] < 4:
                time.sleep(0.02)
            proxy.cut()  # mid-job: requests in flight are reset, new connections refused
            before = client.get(f"/v1/generations/{job_id}").json()["counters"]["requests"]
            time.sleep(3.0)
            during = client.get(f"/v1/generations/{job_id}").json()["counters"]["requests"]
            proxy.restore()
            job = wait_for_job(client, job_id, timeout=120)
            items = all_items(client, dataset_id)
            replies = client.get(f"/v1/generations/{job_id}/replies", params={"limit": 500}).json()
    assert job["status"] == "succeeded", job
    assert during <= before + 4  # nothing got through while it was down (at most what was already answered)
    assert job["counters"]["requests"] > during  # and it went on once the server was back
    assert job["counters"]["errors"] == 0  # every request that hit the outage was retried, not lost
    assert proxy.cut_events == 1
    assert_counters_match_items(job, items)
    assert len({r["request_no"] for r in replies}) == len(replies) == job["counters"]["requests"]
    copies = Counter((i["reply_id"], i["instruction"], i["input"], i["output"]) for i in items)
    assert max(copies.values()) == 1  # no item stored twice
