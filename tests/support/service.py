"""Run the real FastAPI app (lifespan, worker, database) in-process for API tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth.roles import Role
from app.auth.service import create_token, create_user
from app.core.config import Settings
from app.core.db import transaction
from app.llm import LLMBackend
from app.llm.registry import BackendRegistry
from app.main import create_app


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": database_url, "worker_poll_seconds": 0.05}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def running_service(
    settings: Settings, backend: LLMBackend | None = None, *, role: Role | None = Role.admin
) -> Iterator[TestClient]:
    """The app with its worker; `backend`, when given, answers for every configured backend name. The client
    sends a bearer token of a fresh user with `role` (None: no credentials)."""
    registry = (
        BackendRegistry(settings.backends, factory=lambda _name, _settings: backend)
        if backend is not None
        else None
    )
    with TestClient(create_app(settings, backends=registry)) as client:
        if role is not None:
            client.headers["Authorization"] = f"Bearer {new_user_token(client, role)}"
        yield client


def new_user_token(
    client: TestClient | FastAPI, role: Role, name: str | None = None, password: str | None = None
) -> str:
    """A new user with `role` (and `password`, for the UI) and an API token of theirs, made in the database of
    a running app (a TestClient's, or an app whose lifespan has started)."""
    app = client.app if isinstance(client, TestClient) else client
    with transaction(app.state.sessions) as session:  # type: ignore[attr-defined]
        user = create_user(session, name or f"{role.value}-{uuid.uuid4().hex[:8]}", role, password)
        secret, _ = create_token(session, user, name="tests")
    return secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for_job(client: TestClient, job_id: int, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/generations/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


def all_items(client: TestClient, dataset_id: int, **filters: Any) -> list[dict[str, Any]]:
    """Every item matching `filters`, page by page (keyset cursors)."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 500, **filters, **({"cursor": cursor} if cursor else {})}
        response = client.get(f"/v1/datasets/{dataset_id}/items", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
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
