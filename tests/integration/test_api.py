"""The HTTP API end to end with a scripted backend: fast checks of control flow, validation and bookkeeping.

The same paths run against the real embedded model and a real OpenAI-compatible server in test_generation_real.py.
"""

from __future__ import annotations

import json

import pytest

from app.llm import LLMUnavailableError
from app.llm.fake import ScriptedBackend
from tests.support.service import (
    all_items,
    assert_counters_match_items,
    make_settings,
    running_service,
    wait_for_job,
)

SEED_LINES = [
    {
        "instruction": "翻译成英文：你好",
        "instances": [{"input": "", "output": "Hello"}],
        "is_classification": False,
    },
    {
        "instruction": "Classify the sentiment of this product review as positive or negative.",
        "instances": [{"input": "The battery died after a day.", "output": "negative"}],
        "is_classification": True,
    },
    {
        "instruction": "Give three tips for staying focused while studying.",
        "instances": [
            {"input": "", "output": "1. Silence your phone. 2. Work in short blocks. 3. Take breaks."}
        ],
    },
]
SEED_FILE = "\n".join(json.dumps(line, ensure_ascii=False) for line in SEED_LINES).encode()

REPLY = json.dumps(
    {
        "tasks": [
            {"instruction": "翻译成英文：你好", "input": "", "output": "Hello"},
            {"instruction": "请翻译成英文：你好吗", "input": "", "output": "How are you?"},
            {
                "instruction": "Draw a picture of a cat sitting on a mat.",
                "input": "",
                "output": "(a drawing)",
            },
            {"instruction": "List three prime numbers greater than ten.", "input": "", "output": ""},
            {
                "instruction": "Explain why the sky looks blue during the day.",
                "input": "",
                "output": "Air molecules scatter blue sunlight more than red light.",
            },
            {
                "instruction": "Explain why the sky looks blue during the day time.",
                "input": "",
                "output": "Because of Rayleigh scattering.",
            },
            {"instruction": "写一首关于冬天大海的短诗。", "input": "", "output": "冬海无声，浪花如雪。"},
        ]
    },
    ensure_ascii=False,
)


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend(lambda _prompt: REPLY)


@pytest.fixture
def client(database_url, scripted):
    with running_service(make_settings(database_url), scripted) as client:
        yield client


def _dataset_with_seeds(client, name: str = "demo") -> int:
    dataset_id = client.post("/v1/datasets", json={"name": name}).json()["id"]
    response = client.post(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("seeds.jsonl", SEED_FILE)})
    assert response.status_code == 201, response.text
    return dataset_id


def test_health(client) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["worker"] == "running"


def test_dataset_lifecycle_and_errors(client) -> None:
    created = client.post("/v1/datasets", json={"name": "first", "description": "d"})
    assert created.status_code == 201
    assert created.json()["counts"] == {
        "seeds": 0,
        "jobs": 0,
        "items": 0,
        "pending": 0,
        "approved": 0,
        "rejected": 0,
        "filtered": 0,
    }
    assert client.post("/v1/datasets", json={"name": "first"}).status_code == 409
    bad = client.post("/v1/datasets", json={"name": ""})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "name"]
    assert client.get("/v1/datasets/999").status_code == 404
    assert [d["name"] for d in client.get("/v1/datasets").json()] == ["first"]


def test_seed_upload_is_idempotent_and_malformed_files_import_nothing(client, shared_data) -> None:
    dataset_id = client.post("/v1/datasets", json={"name": "s"}).json()["id"]
    data = (shared_data / "self_instruct_seed_tasks.jsonl").read_bytes()
    first = client.post(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("seed_tasks.jsonl", data)}).json()
    assert (first["parsed"], first["imported"], first["total_seeds"]) == (175, 175, 175)
    again = client.post(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("seed_tasks.jsonl", data)}).json()
    assert (again["imported"], again["skipped_existing"]) == (0, 175)

    lines = data.decode().splitlines()
    lines[2] = lines[2].replace('"instruction"', '"instrucion"')
    broken = ("\n".join(lines[:5]) + "\n").encode()
    other = client.post("/v1/datasets", json={"name": "t"}).json()["id"]
    response = client.post(f"/v1/datasets/{other}/seeds", files={"file": ("bad.jsonl", broken)})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["line"] == 3 and detail["field"] == "instruction" and "line 3" in detail["message"]
    assert client.get(f"/v1/datasets/{other}").json()["counts"]["seeds"] == 0
    assert client.post("/v1/datasets/999/seeds", files={"file": ("x.jsonl", data)}).status_code == 404


def test_generation_job_stores_items_whose_reasons_add_up(client, scripted) -> None:
    dataset_id = _dataset_with_seeds(client)
    response = client.post(
        f"/v1/datasets/{dataset_id}/generations", json={"count": 2, "prompts_per_request": 1, "seed": 7}
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/generations/{response.json()['id']}"
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    counters = job["counters"]
    assert counters["prompts"] == 1 and counters["parsed"] == 7 and counters["accepted"] == 2
    assert counters["duplicates"] == 3
    assert sum(counters["filtered"].values()) == 2

    items = all_items(client, dataset_id)
    assert_counters_match_items(job, items)
    by_text = {i["instruction"]: i for i in items}
    assert by_text["翻译成英文：你好"]["duplicate_signal"] == "exact"
    chinese_dup = by_text["请翻译成英文：你好吗"]
    assert chinese_dup["duplicate_signal"] == "rouge_l" and chinese_dup["nearest"]["kind"] == "seed"
    assert chinese_dup["nearest"]["rouge_l"] > 0.7
    sky = by_text["Explain why the sky looks blue during the day."]
    sky_dup = by_text["Explain why the sky looks blue during the day time."]
    assert sky["status"] == "pending" and sky_dup["status"] == "filtered"
    assert sky_dup["nearest"] == {
        "kind": "item",
        "id": sky["id"],
        "rouge_l": pytest.approx(sky_dup["nearest"]["rouge_l"]),
    }
    assert by_text["写一首关于冬天大海的短诗。"]["status"] == "pending"
    assert by_text["List three prime numbers greater than ten."]["filter_reason"] == "empty_output"

    # The prompt was built from the dataset's seeds and asked for JSON that follows the schema.
    call = scripted.calls[0]
    assert call.kind == "chat" and call.json_schema is not None
    assert any(seed["instruction"] in call.prompts[0] for seed in SEED_LINES)

    counts = client.get(f"/v1/datasets/{dataset_id}").json()["counts"]
    assert counts["pending"] == 2 and counts["filtered"] == 5 and counts["jobs"] == 1

    pending = client.get(f"/v1/datasets/{dataset_id}/items", params={"status": "pending", "limit": 1}).json()
    assert pending["total"] == 2 and len(pending["data"]) == 1
    assert client.get(f"/v1/items/{sky['id']}").json()["instruction"] == sky["instruction"]
    assert client.get("/v1/items/99999").status_code == 404
    assert client.get(f"/v1/datasets/{dataset_id}/items", params={"status": "nope"}).status_code == 422


def test_a_second_job_deduplicates_against_the_first(client) -> None:
    dataset_id = _dataset_with_seeds(client)
    first = wait_for_job(
        client, client.post(f"/v1/datasets/{dataset_id}/generations", json={"count": 2}).json()["id"]
    )
    second = client.post(f"/v1/datasets/{dataset_id}/generations", json={"count": 1, "max_prompts": 2}).json()
    second = wait_for_job(client, second["id"])
    assert first["status"] == "succeeded"
    # Same replies again: everything is a duplicate of the first job's items or a seed, or filtered.
    assert second["status"] == "succeeded" and second["counters"]["accepted"] == 0
    assert "budget" in second["message"]
    assert_counters_match_items(second, all_items(client, dataset_id))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": 5, "temperature": 9}, "temperature"),
        ({"count": 5, "llm": {"backend": "gpt5"}}, "backend"),
        ({"count": 5, "llm": {"base_url": "not a url"}}, "base_url"),
        ({"count": 5, "colour": "blue"}, "colour"),
    ],
)
def test_invalid_generation_parameters_are_422_naming_the_field(client, body, field) -> None:
    dataset_id = _dataset_with_seeds(client)
    response = client.post(f"/v1/datasets/{dataset_id}/generations", json=body)
    assert response.status_code == 422
    assert field in response.json()["detail"][0]["loc"]


def test_generation_needs_a_known_dataset_with_seeds(client) -> None:
    assert client.post("/v1/datasets/999/generations", json={"count": 1}).status_code == 404
    empty = client.post("/v1/datasets", json={"name": "empty"}).json()["id"]
    response = client.post(f"/v1/datasets/{empty}/generations", json={"count": 1})
    assert response.status_code == 409 and "seed" in response.json()["detail"]
    assert client.get("/v1/generations/999").status_code == 404


def test_backend_down_fails_the_job_with_a_clear_error_and_writes_nothing(client, scripted) -> None:
    dataset_id = _dataset_with_seeds(client)
    scripted.fail_with(
        LLMUnavailableError("cannot reach http://127.0.0.1:9/v1 after 6 attempts: connection refused")
    )
    job = wait_for_job(
        client, client.post(f"/v1/datasets/{dataset_id}/generations", json={"count": 3}).json()["id"]
    )
    assert job["status"] == "failed"
    assert "cannot reach" in job["error"]
    assert job["counters"]["parsed"] == 0 and job["finished_at"] is not None
    assert client.get(f"/v1/datasets/{dataset_id}/items").json()["total"] == 0


def test_cancel(client) -> None:
    dataset_id = _dataset_with_seeds(client)
    job = wait_for_job(
        client, client.post(f"/v1/datasets/{dataset_id}/generations", json={"count": 1}).json()["id"]
    )
    response = client.post(f"/v1/generations/{job['id']}/cancel")
    assert response.status_code == 409 and "already succeeded" in response.json()["detail"]
    assert client.post("/v1/generations/999/cancel").status_code == 404


def test_cancel_a_running_job_keeps_the_finished_batches(client) -> None:
    dataset_id = _dataset_with_seeds(client)
    body = {"count": 1000, "max_prompts": 100_000, "prompts_per_request": 1}
    job_id = client.post(f"/v1/datasets/{dataset_id}/generations", json=body).json()["id"]
    while client.get(f"/v1/generations/{job_id}").json()["counters"]["prompts"] < 2:
        pass
    assert client.post(f"/v1/generations/{job_id}/cancel").json()["cancel_requested"] is True
    job = wait_for_job(client, job_id)
    assert job["status"] == "cancelled" and job["counters"]["prompts"] < 100_000
    assert_counters_match_items(job, all_items(client, dataset_id))


def test_cancel_a_queued_job(database_url, scripted) -> None:
    with running_service(make_settings(database_url, worker_enabled=False), scripted) as client:
        dataset_id = _dataset_with_seeds(client)
        job = client.post(f"/v1/datasets/{dataset_id}/generations", json={"count": 1}).json()
        assert job["status"] == "queued"
        cancelled = client.post(f"/v1/generations/{job['id']}/cancel").json()
        assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
        assert client.get("/healthz").json()["worker"] == "disabled"


def test_completions_mode_sends_the_prompts_of_a_batch_in_one_call(database_url) -> None:
    reply = (
        " Name the capital of France.\n5. Input:\n<noinput>\n5. Output:\nParis\n###\n"
        "6. Instruction: 把这句话翻译成英文。\n6. Input:\n早上好\n6. Output:\nGood morning."
    )
    backend = ScriptedBackend(lambda _prompt: reply)
    settings = make_settings(database_url)
    with running_service(settings, backend) as client:
        dataset_id = _dataset_with_seeds(client)
        body = {"count": 2, "prompts_per_request": 3, "num_examples": 3, "llm": {"mode": "completions"}}
        job = wait_for_job(
            client, client.post(f"/v1/datasets/{dataset_id}/generations", json=body).json()["id"]
        )
        items = all_items(client, dataset_id)
    assert job["status"] == "succeeded", job
    [call] = backend.calls
    assert call.kind == "complete" and len(call.prompts) == 3
    assert all(p.rstrip().endswith(("4. Instruction:", "4. 指令：")) for p in call.prompts)
    assert call.params.stop and all("9." in stop for stop in call.params.stop)  # tasks 4 to 8 were asked for
    # Three identical replies: the first copy of each task is kept, the other two are exact duplicates.
    assert job["counters"]["accepted"] == 2 and job["counters"]["duplicates"] == 4
    assert_counters_match_items(job, items)
