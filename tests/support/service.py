"""Run the real FastAPI app (lifespan, worker, database) in-process for API tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.llm import LLMBackend
from app.llm.registry import BackendRegistry
from app.main import create_app


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": database_url, "worker_poll_seconds": 0.05}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def running_service(settings: Settings, backend: LLMBackend | None = None) -> Iterator[TestClient]:
    """The app with its worker; `backend`, when given, answers for every configured backend name."""
    registry = (
        BackendRegistry(settings.backends, factory=lambda _name, _settings: backend)
        if backend is not None
        else None
    )
    with TestClient(create_app(settings, backends=registry)) as client:
        yield client


def wait_for_job(client: TestClient, job_id: int, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/generations/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


def all_items(client: TestClient, dataset_id: int, **filters: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = client.get(
            f"/v1/datasets/{dataset_id}/items", params={"limit": 500, "offset": len(items), **filters}
        ).json()
        items.extend(page["data"])
        if len(items) >= page["total"]:
            return items


def assert_counters_match_items(job: dict[str, Any], items: list[dict[str, Any]]) -> None:
    """The job's counters and the stored items tell the same story, reason by reason."""
    counters = job["counters"]
    mine = [i for i in items if i["job_id"] == job["id"]]
    assert len(mine) == counters["parsed"]
    assert (
        counters["parsed"]
        == sum(counters["filtered"].values()) + counters["duplicates"] + counters["accepted"]
    )
    assert sum(1 for i in mine if i["status"] == "pending") == counters["accepted"]
    assert sum(1 for i in mine if i["filter_reason"] == "near_duplicate") == counters["duplicates"]
    reasons: dict[str, int] = {}
    for item in mine:
        if item["status"] == "filtered" and item["filter_reason"] != "near_duplicate":
            reasons[item["filter_reason"]] = reasons.get(item["filter_reason"], 0) + 1
    assert reasons == {k: v for k, v in counters["filtered"].items() if v}
    for item in mine:
        if item["filter_reason"] == "near_duplicate":
            assert item["duplicate_signal"] in ("exact", "rouge_l", "fuzzy", "semantic")
            assert item["nearest"] is not None and item["nearest"]["kind"] in ("seed", "item")
