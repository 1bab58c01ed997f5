"""The HTTP API end to end with a scripted backend: fast checks of control flow, validation and bookkeeping.

The same paths run against the real embedded model and a real OpenAI-compatible server in test_generation_real.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.roles import Role
from app.core.db import create_db_engine
from app.datasets.models import Dataset, SeedTask
from app.generation.models import GenerationJob
from app.jobs.models import JobStatus
from app.llm import LLMUnavailableError
from app.llm.registry import BackendRegistry
from app.main import create_app
from tests.support.event_loop import watch_loop
from tests.support.scripted_backend import ScriptedBackend
from tests.support.service import (
    all_items,
    assert_counters_match_items,
    make_settings,
    new_user_token,
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
        "disputed": 0,
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


class _OnResponseStart:
    """ASGI middleware: calls `hook(status)` as a response starts, before the client can have any of it."""

    def __init__(self, app: ASGIApp, hook: Callable[[int], None]) -> None:
        self.app = app
        self.hook = hook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.hook(message["status"])
            await send(message)

        await self.app(scope, receive, watched_send)


def test_every_write_is_committed_before_its_response_starts(database_url, scripted) -> None:
    """A client that has its 201/202 can read what it created, from any instance: the request's transaction
    commits before the response starts. At each response start, a connection of its own looks at the database."""
    observer = create_db_engine(database_url)
    events: list[tuple[Any, ...]] = []

    def visible() -> dict[str, int]:
        with observer.connect() as conn:
            return {
                "datasets": conn.scalar(select(func.count()).select_from(Dataset)),
                "seeds": conn.scalar(select(func.count()).select_from(SeedTask)),
                "jobs": conn.scalar(select(func.count()).select_from(GenerationJob)),
                "cancelled": conn.scalar(
                    select(func.count())
                    .select_from(GenerationJob)
                    .where(GenerationJob.status == JobStatus.cancelled)
                ),
            }

    settings = make_settings(database_url, worker_enabled=False)  # no worker: every commit is a request's
    app = create_app(settings, backends=BackendRegistry(settings.backends, factory=lambda *_: scripted))
    app.add_middleware(_OnResponseStart, hook=lambda status: events.append(("response", status, visible())))
    try:
        with TestClient(app) as client:
            client.headers["Authorization"] = f"Bearer {new_user_token(client, Role.admin)}"
            assert client.get("/v1/me").status_code == 200  # the token's first use is recorded now, not below
            event.listen(app.state.sessions, "after_commit", lambda _session: events.append(("commit",)))

            def write(path: str, **kwargs: Any) -> dict[str, Any]:
                events.clear()
                response = client.post(path, **kwargs)
                assert response.status_code in (200, 201, 202), response.text
                return response.json()

            dataset_id = write("/v1/datasets", json={"name": "committed"})["id"]
            seen = {"datasets": 1, "seeds": 0, "jobs": 0, "cancelled": 0}
            assert events == [("commit",), ("response", 201, seen)]

            write(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("seeds.jsonl", SEED_FILE)})
            seen["seeds"] = len(SEED_LINES)
            assert events == [("commit",), ("response", 201, seen)]

            job_id = write(f"/v1/datasets/{dataset_id}/generations", json={"count": 1})["id"]
            seen["jobs"] = 1
            assert events == [("commit",), ("response", 202, seen)]

            write(f"/v1/generations/{job_id}/cancel")
            seen["cancelled"] = 1
            assert events == [("commit",), ("response", 200, seen)]
    finally:
        observer.dispose()


def test_parsing_a_large_seed_upload_leaves_the_event_loop_free(tmp_path) -> None:
    """A few MiB of seeds take a while to parse and import; the event loop that serves every other request keeps
    running all along. The upload goes through the ASGI app in the very loop being watched."""
    records = [
        {
            "instruction": f"Explain topic number {i} to a curious student, in plain words.",
            "input": f"Some context about topic {i}. " * 3,
            "output": f"Topic {i} is about this and that. " * 6,
        }
        for i in range(12_000)
    ]
    data = "\n".join(json.dumps(r) for r in records).encode()
    settings = make_settings(f"sqlite:///{tmp_path / 'upload.db'}", worker_enabled=False)
    assert 2 * 2**20 < len(data) < settings.max_upload_bytes
    app = create_app(settings)

    async def upload() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://sprout") as client,
        ):
            client.headers["Authorization"] = f"Bearer {new_user_token(app, Role.admin)}"
            dataset_id = (await client.post("/v1/datasets", json={"name": "big"})).json()["id"]
            files = {"file": ("alpaca.jsonl", data)}
            return await watch_loop(client.post(f"/v1/datasets/{dataset_id}/seeds", files=files), tick=0.005)

    expected = len(records)
    del records
    # The import allocates many objects, so the garbage collector runs often, holding the GIL while it walks the
    # whole heap: with the heap of a long test session behind it, each pass stalls the loop for far longer than
    # in a service. Frozen, that heap is not walked; the upload's own objects still are.
    gc.collect()
    gc.freeze()
    try:
        watch = asyncio.run(upload())
    finally:
        gc.unfreeze()
    assert watch.result.status_code == 201, watch.result.text
    assert watch.result.json()["imported"] == expected
    assert watch.seconds > 0.5  # long enough that a blocked loop would stall for nearly all of it ...
    # ... while a free one, even on a loaded machine, mostly ticks on time.
    assert watch.max_gap < watch.seconds / 3, f"event loop blocked for {watch.max_gap * 1000:.0f} ms"
    stalled = watch.stalled(longer_than=0.05)  # and not in many shorter blocks either
    assert stalled < watch.seconds / 2, f"event loop stalled {stalled:.2f} s of {watch.seconds:.2f} s"


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

    pending = client.get(
        f"/v1/datasets/{dataset_id}/items", params={"status": "pending", "limit": 1, "count": True}
    ).json()
    assert pending["total"] == 2 and len(pending["data"]) == 1 and pending["next_cursor"]
    rest = client.get(
        f"/v1/datasets/{dataset_id}/items", params={"status": "pending", "cursor": pending["next_cursor"]}
    ).json()
    assert len(rest["data"]) == 1 and rest["next_cursor"] is None and rest["total"] is None
    assert rest["data"][0]["id"] > pending["data"][0]["id"]
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
        ({"count": 5, "backend": "gpt5"}, "backend"),
        ({"count": 5, "llm": {"backend": "openai_compat", "base_url": "http://169.254.169.254/"}}, "llm"),
        ({"count": 5, "base_url": "http://127.0.0.1:1/v1"}, "base_url"),
        ({"count": 5, "api_key": "sk-x"}, "api_key"),
        ({"count": 5, "colour": "blue"}, "colour"),
    ],
)
def test_invalid_generation_parameters_are_422_naming_the_field(client, body, field) -> None:
    dataset_id = _dataset_with_seeds(client)
    for path in ("generations", "generations/preview"):
        response = client.post(f"/v1/datasets/{dataset_id}/{path}", json=body)
        assert response.status_code == 422, response.text
        assert field in response.json()["detail"][0]["loc"]
    assert client.get(f"/v1/datasets/{dataset_id}/generations").json() == []  # nothing was queued


def test_an_unknown_backend_is_refused_listing_the_configured_ones(database_url, scripted) -> None:
    settings = make_settings(
        database_url, backends={"qwen": {"kind": "openai", "base_url": "http://gpu:8000/v1"}}
    )
    with running_service(settings, scripted) as client:
        dataset_id = _dataset_with_seeds(client)
        response = client.post(f"/v1/datasets/{dataset_id}/generations", json={"count": 1, "backend": "fake"})
        assert response.status_code == 422
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "backend"] and "configured backends: local, qwen" in detail["msg"]
        listed = client.get("/v1/backends").json()
        assert [b["name"] for b in listed] == ["local", "qwen"]
        assert "gpu" not in json.dumps(listed)  # names and kinds only: never a URL or a key


def test_a_job_whose_backend_was_removed_since_it_was_queued_fails_naming_it(database_url, scripted) -> None:
    """Queued while backend `gone` was configured, run by a worker whose settings no longer have it: the job
    fails at once with an error naming the backend (not a crash, not left running), and the worker goes on."""
    gone = {"gone": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}}
    with running_service(
        make_settings(database_url, backends=gone, worker_enabled=False), scripted
    ) as client:
        dataset_id = _dataset_with_seeds(client)
        queued = client.post(f"/v1/datasets/{dataset_id}/generations", json={"count": 1, "backend": "gone"})
        assert queued.status_code == 202 and queued.json()["status"] == "queued"
    with running_service(make_settings(database_url), scripted) as client:
        job = wait_for_job(client, queued.json()["id"], timeout=30)
        assert scripted.calls == []  # nothing was sent anywhere on its behalf
        later = client.post(f"/v1/datasets/{dataset_id}/generations", json={"count": 1}).json()
        later = wait_for_job(client, later["id"], timeout=30)
    assert job["status"] == "failed" and job["finished_at"] is not None and job["attempt"] == 1
    assert "unknown backend 'gone'" in job["error"] and "configured backends: local" in job["error"]
    assert "internal error" not in job["error"]  # an expected failure, not a crash caught at the last line
    assert job["counters"]["requests"] == 0
    assert later["status"] == "succeeded" and later["backend"] == "local"


def test_generation_needs_a_known_dataset_with_seeds(client) -> None:
    assert client.post("/v1/datasets/999/generations", json={"count": 1}).status_code == 404
    empty = client.post("/v1/datasets", json={"name": "empty"}).json()["id"]
    response = client.post(f"/v1/datasets/{empty}/generations", json={"count": 1})
    assert response.status_code == 409 and "seed" in response.json()["detail"]
    assert client.get("/v1/generations/999").status_code == 404


def test_a_backend_that_stays_down_fails_the_job_past_its_error_budget(database_url) -> None:
    down = ScriptedBackend(
        lambda _p: LLMUnavailableError(
            "LLM server http://127.0.0.1:9/v1 failed after 7 attempt(s): connection refused"
        )
    )
    with running_service(make_settings(database_url, job_max_attempts=1), down) as client:
        dataset_id = _dataset_with_seeds(client)
        body = {"count": 3, "max_errors": 2}
        job = wait_for_job(
            client, client.post(f"/v1/datasets/{dataset_id}/generations", json=body).json()["id"]
        )
        assert job["status"] == "failed"
        assert "error budget of 2" in job["error"] and "connection refused" in job["error"]
        assert (
            job["counters"]["errors"] == 3
            and job["counters"]["parsed"] == 0
            and job["finished_at"] is not None
        )
        assert client.get(f"/v1/datasets/{dataset_id}/items").json()["data"] == []
        replies = client.get(f"/v1/generations/{job['id']}/replies").json()
        assert len(replies) == 3 and all("connection refused" in r["error"] for r in replies)


def test_cancel(client) -> None:
    dataset_id = _dataset_with_seeds(client)
    job = wait_for_job(
        client, client.post(f"/v1/datasets/{dataset_id}/generations", json={"count": 1}).json()["id"]
    )
    response = client.post(f"/v1/generations/{job['id']}/cancel")
    assert response.status_code == 409 and "already succeeded" in response.json()["detail"]
    assert client.post("/v1/generations/999/cancel").status_code == 404


def test_cancel_a_running_job_keeps_what_it_accepted(database_url) -> None:
    slow = ScriptedBackend(lambda _prompt: REPLY, delay=0.05)
    with running_service(make_settings(database_url, job_lease_seconds=1.0), slow) as client:
        dataset_id = _dataset_with_seeds(client)
        body = {"count": 1000, "max_prompts": 100_000}
        job_id = client.post(f"/v1/datasets/{dataset_id}/generations", json=body).json()["id"]
        while client.get(f"/v1/generations/{job_id}").json()["counters"]["requests"] < 2:
            time.sleep(0.01)
        assert client.post(f"/v1/generations/{job_id}/cancel").json()["cancel_requested"] is True
        job = wait_for_job(client, job_id, timeout=10)
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


def test_completions_mode_sends_the_prompts_of_a_request_together(database_url) -> None:
    reply = (
        " Name the capital of France.\n4. Input:\n<noinput>\n4. Output:\nParis\n###\n"
        "5. Instruction: 把这句话翻译成英文。\n5. Input:\n早上好\n5. Output:\nGood morning."
    )
    backend = ScriptedBackend(lambda _prompt: reply)
    backends = {
        "batch": {"kind": "openai", "base_url": "http://unused:1/v1", "mode": "completions", "max_batch": 8}
    }
    settings = make_settings(database_url, backends=backends, default_backend="batch")
    with running_service(settings, backend) as client:
        dataset_id = _dataset_with_seeds(client)
        body = {"count": 2, "prompts_per_request": 3, "num_examples": 3, "max_prompts": 3}
        job = wait_for_job(
            client, client.post(f"/v1/datasets/{dataset_id}/generations", json=body).json()["id"]
        )
        items = all_items(client, dataset_id)
    assert job["status"] == "succeeded", job
    assert job["backend"] == "batch"
    [call] = backend.calls
    assert call.kind == "complete" and len(call.prompts) == 3
    assert all(p.rstrip().endswith(("4. Instruction:", "4. 指令：")) for p in call.prompts)
    assert call.params.stop and all("9." in stop for stop in call.params.stop)  # tasks 4 to 8 were asked for
    # Three identical replies: the first copy of each task is kept, the other two are exact duplicates.
    assert job["counters"]["accepted"] == 2 and job["counters"]["duplicates"] == 4
    assert_counters_match_items(job, items)


def test_replies_show_what_the_model_wrote_for_each_request(client) -> None:
    dataset_id = _dataset_with_seeds(client)
    job = wait_for_job(
        client,
        client.post(f"/v1/datasets/{dataset_id}/generations", json={"count": 2, "seed": 3}).json()["id"],
    )
    [reply] = client.get(f"/v1/generations/{job['id']}/replies").json()
    assert reply["request_no"] == 0 and reply["attempt"] == 1 and reply["error"] is None
    assert reply["choices"][0]["text"] == REPLY and reply["choices"][0]["items"] == 7
    assert reply["parsed"] == 7 and reply["accepted"] == 2
    items = all_items(client, dataset_id)
    assert {i["reply_id"] for i in items} == {reply["id"]}
    assert client.get(f"/v1/generations/{job['id']}/replies", params={"after": 0}).json() == []
    assert client.get("/v1/generations/999/replies").status_code == 404


def test_preview_shows_prompt_reply_and_verdicts_and_stores_nothing(client, scripted) -> None:
    dataset_id = _dataset_with_seeds(client)
    response = client.post(f"/v1/datasets/{dataset_id}/generations/preview", json={"count": 1, "seed": 5})
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["backend"] == "local" and preview["mode"] == "chat"
    assert preview["request"]["messages"][-1]["content"] == scripted.calls[-1].prompts[0]
    assert preview["choices"][0]["text"] == REPLY
    verdicts = {c["instruction"]: c for c in preview["candidates"]}
    assert verdicts["翻译成英文：你好"]["verdict"] == "near_duplicate"
    assert verdicts["翻译成英文：你好"]["nearest"]["kind"] == "seed"
    assert verdicts["翻译成英文：你好"]["nearest_text"] == "翻译成英文：你好"
    assert verdicts["Draw a picture of a cat sitting on a mat."]["verdict"] == "filtered"
    assert verdicts["Explain why the sky looks blue during the day."]["verdict"] == "accepted"
    assert verdicts["Explain why the sky looks blue during the day time."]["verdict"] == "near_duplicate"
    dataset = client.get(f"/v1/datasets/{dataset_id}").json()
    assert dataset["counts"]["items"] == 0 and dataset["counts"]["jobs"] == 0


def test_a_model_name_must_be_a_tuned_model_registered_on_the_backend(client, scripted) -> None:
    """`model` may only name a fine-tuned adapter Sprout registered on that backend ([5/8]): anything else is a
    422 before the backend is called, for jobs and previews alike."""
    dataset_id = _dataset_with_seeds(client)
    calls = len(scripted.calls)
    for route in ("generations", "generations/preview"):
        refused = client.post(
            f"/v1/datasets/{dataset_id}/{route}", json={"count": 1, "model": "some-other-model"}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"][-1] == "model" and "registered" in refused.text
    assert (
        len(scripted.calls) == calls
        and client.get(f"/v1/datasets/{dataset_id}").json()["counts"]["jobs"] == 0
    )


def test_an_upload_over_the_limit_is_refused_before_its_body_is_read(database_url, scripted) -> None:
    with running_service(make_settings(database_url, max_upload_bytes=4096), scripted) as client:
        dataset_id = client.post("/v1/datasets", json={"name": "big"}).json()["id"]
        big = b'{"instruction": "x", "instances": []}\n' * 10_000
        response = client.post(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("big.jsonl", big)})
        assert response.status_code == 413 and "larger than" in response.json()["detail"]

        def chunks():  # no Content-Length: the limit stops the stream itself
            for _ in range(200):
                yield b"a" * 10_000

        response = client.post(
            f"/v1/datasets/{dataset_id}/seeds",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        )
        assert response.status_code == 413
        assert client.get(f"/v1/datasets/{dataset_id}").json()["counts"]["seeds"] == 0


def test_no_request_can_make_the_server_contact_an_address_it_was_not_configured_with(database_url) -> None:
    """A listening socket stands for an internal address; every field a caller controls tries to point there."""
    import socket

    sentinel = socket.socket()
    sentinel.bind(("127.0.0.1", 0))
    sentinel.listen(16)
    sentinel.setblocking(False)
    target = f"http://127.0.0.1:{sentinel.getsockname()[1]}/v1"
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: the configured server is simply down
    configured = f"http://127.0.0.1:{dead.getsockname()[1]}/v1"
    backends = {"remote": {"kind": "openai", "base_url": configured, "max_retries": 0}}
    try:
        with running_service(
            make_settings(database_url, backends=backends, default_backend="remote", job_max_attempts=1)
        ) as client:
            dataset_id = client.post(
                "/v1/datasets", json={"name": "ssrf", "settings": {"base_url": target}}
            ).json()["id"]
            seeds = json.dumps(
                {
                    "instruction": f"Fetch {target} and summarise it.",
                    "instances": [{"input": target, "output": "x"}],
                }
            )
            assert (
                client.post(
                    f"/v1/datasets/{dataset_id}/seeds", files={"file": ("s.jsonl", seeds.encode())}
                ).status_code
                == 201
            )
            attempts = [
                {"count": 1, "backend": target},
                {"count": 1, "llm": {"base_url": target}},
                {"count": 1, "base_url": target},
                {"count": 1, "backend": "remote", "api_base": target},
                {"count": 1, "backend": "remote", "extra_body": {"url": target}},
            ]
            for body in attempts:
                for path in ("generations", "generations/preview"):
                    assert client.post(f"/v1/datasets/{dataset_id}/{path}", json=body).status_code == 422
            job = client.post(
                f"/v1/datasets/{dataset_id}/generations", json={"count": 1, "max_errors": 0}
            ).json()
            job = wait_for_job(client, job["id"])
            assert (
                job["status"] == "failed" and str(dead.getsockname()[1]) in job["error"]
            )  # it went where configured
        try:
            sentinel.accept()
            contacted = True
        except BlockingIOError:
            contacted = False
        assert not contacted
    finally:
        sentinel.close()
        dead.close()
