"""/v1/schedules over real HTTP (uvicorn) on SQLite and PostgreSQL: create, list, show with the next fire times,
change, pause, resume, delete, run history; 422s that name the field, 404s, 409s; who may do what."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.auth.roles import Role
from app.core.db import transaction
from app.schedules import service
from tests.integration.schedules.conftest import end_job, new_dataset, settings_for
from tests.support.app_server import serving
from tests.support.service import new_user_token


@dataclass
class Api:
    client: httpx.Client  # an admin's token
    reviewer: httpx.Client
    service_role: httpx.Client
    app: Any
    dataset_id: int


@pytest.fixture(scope="module")
def served(module_database_url: str) -> Iterator[tuple[Any, dict[Role, httpx.Client]]]:
    """One server per database kind for the module, with a client per role."""
    with serving(settings_for(module_database_url)) as app_served, ExitStack() as stack:
        clients = {
            role: stack.enter_context(
                httpx.Client(
                    base_url=app_served.base_url,
                    headers={"Authorization": f"Bearer {new_user_token(app_served.app, role)}"},
                    trust_env=False,
                )
            )
            for role in Role
        }
        yield app_served.app, clients


@pytest.fixture
def api(served: tuple[Any, dict[Role, httpx.Client]]) -> Iterator[Api]:
    """A dataset of the test's own; the test's schedules are deleted afterwards."""
    app, clients = served
    sessions = app.state.sessions
    yield Api(
        clients[Role.admin], clients[Role.reviewer], clients[Role.service], app, new_dataset(sessions, "api")
    )
    with transaction(sessions) as session:
        for schedule in service.list_schedules(session):
            service.delete_schedule(session, schedule.id)


def body(api: Api, **fields: Any) -> dict[str, Any]:
    return {"name": "nightly", "dataset_id": api.dataset_id, "cron": "0 9 * * *", **fields}


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def assert_422(response: httpx.Response, *loc: str | int, says: str = "") -> None:
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(tuple(e["loc"]) == ("body", *loc) for e in errors), errors
    if says:
        assert any(says in e["msg"] for e in errors), errors


def test_create_show_list_change_pause_resume_delete(api: Api) -> None:
    created = api.client.post(
        "/v1/schedules",
        json=body(
            api, timezone="Asia/Shanghai", params={"count": 5, "language": "zh"}, priority=3, max_runs=10
        ),
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert created.headers["location"] == f"/v1/schedules/{schedule['id']}"
    assert (schedule["state"], schedule["enabled"], schedule["backend"], schedule["priority"]) == (
        "active",
        True,
        "local",  # the default backend, fixed now
        3,
    )
    assert schedule["params"] == {"count": 5, "language": "zh", "n": 1}
    assert (schedule["runs"], schedule["missed"], schedule["created_by"].startswith("admin")) == (0, 0, True)
    # 09:00 in Shanghai is 01:00 UTC: the next three, a day apart.
    upcoming = [parse(t) for t in schedule["upcoming"]]
    assert len(upcoming) == 3 and all(t.hour == 1 and t.minute == 0 for t in upcoming)
    assert [b - a for a, b in zip(upcoming, upcoming[1:], strict=False)] == [timedelta(days=1)] * 2
    assert parse(schedule["next_fire_at"]) == upcoming[0] > datetime.now(UTC) - timedelta(minutes=1)

    one = api.client.get(f"/v1/schedules/{schedule['id']}").json()
    assert one["upcoming"] == schedule["upcoming"] and one["name"] == "nightly"
    listed = api.client.get("/v1/schedules").json()
    assert [s["id"] for s in listed] == [schedule["id"]] and listed[0]["upcoming"] is None
    assert api.client.get("/v1/schedules", params={"dataset_id": api.dataset_id + 1}).json() == []

    changed = api.client.patch(
        f"/v1/schedules/{schedule['id']}",
        json={
            "cron": "*/10 * * * *",
            "timezone": "UTC",
            "params": {"count": 7, "language": None},
            "max_runs": None,
        },
    )
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert after["params"] == {
        "count": 7,
        "language": "auto",
        "n": 1,
    }  # merged; null went back to the default
    assert after["max_runs"] is None and after["priority"] == 3
    times = [parse(t) for t in after["upcoming"]]
    assert all(t.minute % 10 == 0 for t in times) and times[1] - times[0] == timedelta(minutes=10)

    paused = api.client.post(f"/v1/schedules/{schedule['id']}/pause").json()
    assert (paused["state"], paused["enabled"], paused["next_fire_at"], paused["upcoming"]) == (
        "paused",
        False,
        None,
        [],
    )
    resumed = api.client.post(f"/v1/schedules/{schedule['id']}/resume").json()
    assert resumed["state"] == "active" and parse(resumed["next_fire_at"]).minute % 10 == 0

    assert api.client.delete(f"/v1/schedules/{schedule['id']}").status_code == 204
    assert api.client.get(f"/v1/schedules/{schedule['id']}").status_code == 404
    assert api.client.delete(f"/v1/schedules/{schedule['id']}").status_code == 404


def test_bad_input_is_a_422_naming_the_field(api: Api) -> None:
    post = api.client.post
    assert_422(post("/v1/schedules", json=body(api, cron="61 * * * *")), "cron", says="out of range")
    assert_422(post("/v1/schedules", json=body(api, cron="0 0 30 2 *")), "cron", says="never fires")
    assert_422(post("/v1/schedules", json=body(api, cron="R * * * *")), "cron", says="random")
    assert_422(post("/v1/schedules", json=body(api, timezone="Mars/Base")), "timezone")
    assert_422(post("/v1/schedules", json=body(api, params={"count": 0})), "params", "count")
    assert_422(post("/v1/schedules", json=body(api, params={"temprature": 1})), "params", "temprature")
    assert_422(
        post("/v1/schedules", json=body(api, backend="nowhere")), "backend", says="configured backends"
    )
    assert_422(post("/v1/schedules", json=body(api, params={"backend": "nowhere"})), "params", "backend")
    assert_422(
        post("/v1/schedules", json=body(api, backend="local", params={"backend": "remote"})),
        "params",
        "backend",
    )
    assert_422(post("/v1/schedules", json=body(api, params={"model": "ft:none"})), "params", "model")
    assert_422(post("/v1/schedules", json=body(api, dataset_id=999)), "dataset_id", says="not found")
    assert_422(post("/v1/schedules", json=body(api, target_status="reviewed")), "target_status")
    assert_422(post("/v1/schedules", json=body(api, max_runs=0)), "max_runs")
    assert_422(post("/v1/schedules", json=body(api, priority=101)), "priority")
    assert_422(post("/v1/schedules", json=body(api, url="http://elsewhere")), "url")
    assert_422(post("/v1/schedules", json=body(api, name="")), "name")
    assert api.client.get("/v1/schedules").json() == []  # none of them was stored

    first = post("/v1/schedules", json=body(api))
    assert first.status_code == 201
    assert post("/v1/schedules", json=body(api)).status_code == 409
    schedule_id = first.json()["id"]
    patch = api.client.patch
    assert_422(patch(f"/v1/schedules/{schedule_id}", json={"cron": "* *"}), "cron")
    assert_422(
        patch(f"/v1/schedules/{schedule_id}", json={"params": {"temperature": 5}}), "params", "temperature"
    )
    assert_422(patch(f"/v1/schedules/{schedule_id}", json={"backend": "nowhere"}), "backend")
    assert_422(patch(f"/v1/schedules/{schedule_id}", json={"cron": None}), "cron", says="may not be null")
    assert_422(patch(f"/v1/schedules/{schedule_id}", json={"dataset_id": 2}), "dataset_id")
    assert api.client.get(f"/v1/schedules/{schedule_id}").json()["cron"] == "0 9 * * *"  # unchanged
    assert patch("/v1/schedules/999", json={"priority": 1}).status_code == 404
    assert api.client.post("/v1/schedules/999/pause").status_code == 404
    assert api.client.get("/v1/schedules/999/runs").status_code == 404
    bad_cursor = api.client.get(f"/v1/schedules/{schedule_id}/runs", params={"cursor": "yesterday"})
    assert bad_cursor.status_code == 422 and bad_cursor.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_run_history_shows_each_run_and_its_job_in_keyset_pages(api: Api) -> None:
    schedule = api.client.post("/v1/schedules", json=body(api, cron="*/5 * * * *", coalesce=True)).json()
    sessions, settings, registry = api.app.state.sessions, api.app.state.settings, api.app.state.backends
    start = parse(schedule["next_fire_at"])
    queued = []
    for k in range(4):  # one firing every 5 minutes, the third after 15 minutes down
        at = start + timedelta(minutes=5 * k + (10 if k >= 2 else 0))
        queued += service.fire_due(sessions, settings, registry, f"worker-{k}", now=at)
        if k < 2:
            end_job(sessions, queued[-1])
    first = api.client.get(f"/v1/schedules/{schedule['id']}/runs", params={"limit": 3})
    assert first.status_code == 200, first.text
    page = first.json()
    runs = page["data"]
    assert [parse(r["fire_time"]) for r in runs] == [
        start + timedelta(minutes=25),
        start + timedelta(minutes=20),
        start + timedelta(minutes=5),
    ]
    latest, coalesced, ended = runs
    assert (latest["outcome"], latest["job_id"], latest["job"]) == ("skipped", None, None)
    assert latest["message"] == f"generation job {queued[2]} from an earlier run is still queued"
    assert (coalesced["outcome"], coalesced["coalesced"], coalesced["job_id"]) == ("queued", 3, queued[2])
    assert coalesced["job"] == {"id": queued[2], "status": "queued", "requested": 10, "accepted": 0}
    assert ended["job"]["status"] == "cancelled" and ended["fired_by"] == "worker-1"
    rest = api.client.get(
        f"/v1/schedules/{schedule['id']}/runs", params={"limit": 3, "cursor": page["next_cursor"]}
    ).json()
    assert [parse(r["fire_time"]) for r in rest["data"]] == [start] and rest["next_cursor"] is None
    shown = api.client.get(f"/v1/schedules/{schedule['id']}").json()
    assert (shown["runs"], shown["missed"]) == (3, 2)
    assert parse(shown["last_fire_at"]) == start + timedelta(minutes=25)


def test_reviewers_read_schedules_and_only_generate_permission_changes_them(api: Api) -> None:
    created = api.service_role.post("/v1/schedules", json=body(api))
    assert created.status_code == 201, created.text  # the service role automates generation
    schedule_id = created.json()["id"]
    reviewer = api.reviewer
    assert reviewer.get("/v1/schedules").status_code == 200
    assert reviewer.get(f"/v1/schedules/{schedule_id}").status_code == 200
    assert reviewer.get(f"/v1/schedules/{schedule_id}/runs").status_code == 200
    for method, path, payload in [
        ("POST", "/v1/schedules", body(api, name="by-a-reviewer")),
        ("PATCH", f"/v1/schedules/{schedule_id}", {"priority": 100}),
        ("POST", f"/v1/schedules/{schedule_id}/pause", None),
        ("POST", f"/v1/schedules/{schedule_id}/resume", None),
        ("DELETE", f"/v1/schedules/{schedule_id}", None),
    ]:
        refused = reviewer.request(method, path, json=payload)
        assert refused.status_code == 403 and "needs 'generate'" in refused.json()["detail"], (method, path)
    anonymous = httpx.get(f"{api.client.base_url}/v1/schedules", trust_env=False)
    assert anonymous.status_code == 401
    shown = api.client.get(f"/v1/schedules/{schedule_id}").json()
    assert (shown["priority"], shown["state"]) == (0, "active")
    with transaction(api.app.state.sessions) as session:
        assert [s.name for s in service.list_schedules(session)] == ["nightly"]
