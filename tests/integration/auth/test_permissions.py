"""Every route the app serves, called without credentials and as each role, checked against the role table.

The walk goes over the app's own routes (app.auth.deps.flat_routes), not the OpenAPI schema, so UI pages and
form posts count too. Each route's declared permission (app.auth.deps.access_of) and ROLE_PERMISSIONS say
what must happen:
- without credentials: 401 (API: JSON and WWW-Authenticate; pages: the login form), except the public routes,
  which are listed here so that a new public route cannot appear unnoticed;
- as a role without the permission: 403; as a role with it: anything but 401/403 (404 or 422 mean the request
  got past the access check); both with a bearer token and with a logged-in browser session;
- a browser session changing something without its CSRF token: 403, and nothing changed.
A route that declares no permission stops create_app, so a new route cannot forget auth.

Auth is the same code on both databases, so this module runs on SQLite; test_accounts.py runs on both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route

import app.main
from app.api.router import api_router
from app.auth.deps import (
    DatasetManager,
    Public,
    Reader,
    UserManager,
    access_of,
    check_every_route_declares_access,
    flat_routes,
)
from app.auth.roles import ROLE_PERMISSIONS, Permission, Role
from app.auth.service import Principal
from app.main import PUBLIC_MOUNTS, create_app
from app.web.router import page
from tests.support.scripted_backend import ScriptedBackend
from tests.support.service import bearer, make_settings, new_user_token, running_service

PUBLIC_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/"),
}
PASSWORD = "correct horse battery"
SEEDS = (
    b'{"instruction": "Name a colour of the sky at noon.", "instances": [{"input": "", "output": "Blue"}]}'
)
ITEMS = [
    {
        "instruction": "Describe how tides are caused by the moon.",
        "input": "",
        "output": "Gravity pulls water.",
    },
    {"instruction": "Translate 'good morning' into French.", "input": "", "output": "Bonjour."},
    {"instruction": "Suggest a name for a bakery by the sea.", "input": "", "output": "Salt & Crumb."},
]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # the route's template, e.g. /v1/items/{item_id}
    permission: Permission | None  # None: public

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class World:
    """A running app with one row of every kind a path names, a user per role (token and password)."""

    client: TestClient
    ids: dict[str, int | str]
    tokens: dict[Role, str]
    names: dict[Role, str]

    def url(self, endpoint: Endpoint) -> str:
        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            assert name in self.ids, (
                f"{endpoint}: no test row for path parameter {name!r}; add one to the world"
            )
            return str(self.ids[name])

        return re.sub(r"\{(\w+)\}", fill, endpoint.path)

    def call(self, endpoint: Endpoint, headers: dict[str, str] | None = None) -> httpx.Response:
        body: dict[str, Any] = {"json": {}} if endpoint.method in ("POST", "PUT", "PATCH") else {}
        return self.client.request(
            endpoint.method, self.url(endpoint), headers=headers or {}, follow_redirects=False, **body
        )


def endpoints_of(fastapi_app: FastAPI) -> list[Endpoint]:
    """Every (method, path) the app serves, with the one permission it declares; logout last (it ends the
    session a walk may be using)."""
    found = []
    for path, route in flat_routes(fastapi_app.routes):
        if not isinstance(route, APIRoute):
            continue
        declared = set(access_of(route))
        assert len(declared) == 1, f"{path} declares {declared}"
        (permission,) = declared
        found.extend(Endpoint(method, path, permission) for method in sorted(route.methods))
    return sorted(found, key=lambda e: e.path == "/logout")


def mounts_of(fastapi_app: FastAPI) -> list[str]:
    return [path for path, route in flat_routes(fastapi_app.routes) if isinstance(route, Mount)]


def log_in(client: TestClient, name: str, password: str) -> tuple[str, str]:
    """Log in through the real form; returns the session cookie and the CSRF token its pages carry. The
    client's cookie jar is left empty, so each request says which session it uses."""
    client.cookies.clear()
    form = client.get("/login")
    login_csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    answer = client.post(
        "/login",
        data={"name": name, "password": password, "csrf_token": login_csrf},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    cookie = answer.cookies["sprout_session"]
    client.cookies.clear()
    page_html = client.get("/ui", headers={"Cookie": f"sprout_session={cookie}"}).text
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page_html).group(1)
    return cookie, csrf


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = f"sqlite:///{tmp_path_factory.mktemp('permissions') / 'sprout.db'}"
    backend = ScriptedBackend(lambda _prompt: json.dumps({"tasks": []}))
    settings = make_settings(url, worker_enabled=False)
    with running_service(settings, backend, role=None) as client:
        names = {role: f"walker-{role.value}" for role in Role}
        tokens = {role: new_user_token(client, role, names[role], PASSWORD) for role in Role}
        admin = bearer(tokens[Role.admin])

        def created(response: httpx.Response) -> dict[str, Any]:
            assert response.status_code in (201, 202), response.text
            return response.json()

        dataset_id = created(client.post("/v1/datasets", json={"name": "walked"}, headers=admin))["id"]
        created(
            client.post(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("s.jsonl", SEEDS)}, headers=admin)
        )
        lines = "\n".join(json.dumps(item) for item in ITEMS).encode()
        imported = created(
            client.post(
                f"/v1/datasets/{dataset_id}/items/import", files={"file": ("i.jsonl", lines)}, headers=admin
            )
        )
        items = client.get(f"/v1/datasets/{dataset_id}/items", headers=admin).json()["data"]
        assert len(items) == len(ITEMS), items
        job = created(client.post(f"/v1/datasets/{dataset_id}/generations", json={"count": 1}, headers=admin))
        examples = "\n".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": i["instruction"]},
                        {"role": "assistant", "content": i["output"]},
                    ]
                }
            )
            for i in ITEMS * 4
        ).encode()
        upload = client.post(
            "/v1/files",
            files={"file": ("train.jsonl", examples)},
            data={"purpose": "fine-tune"},
            headers=admin,
        )
        assert upload.status_code == 200, upload.text
        tuning = client.post(
            "/v1/fine_tuning/jobs",
            json={"model": "SmolLM2-135M-Instruct", "training_file": upload.json()["id"]},
            headers=admin,
        )
        assert tuning.status_code == 200, tuning.text
        claimed = client.post(f"/v1/datasets/{dataset_id}/review/claim", json={"n": 1}, headers=admin).json()
        first = claimed["items"][0]
        decided = client.post(
            f"/v1/items/{first['id']}/review",
            json={"decision": "approve", "version": first["version"]},
            headers=admin,
        )
        assert decided.status_code == 200, decided.text
        snapshot = created(client.post(f"/v1/datasets/{dataset_id}/snapshots", json={}, headers=admin))
        schedule = created(
            client.post(
                "/v1/schedules",
                json={"name": "walked", "dataset_id": dataset_id, "cron": "@daily"},
                headers=admin,
            )
        )
        user = created(client.post("/v1/users", json={"name": "target", "role": "reviewer"}, headers=admin))
        token = created(client.post("/v1/tokens", json={"user": "target"}, headers=admin))
        ids = {
            "dataset_id": dataset_id,
            "item_id": items[0]["id"],
            "import_id": imported["id"],
            "job_id": job["id"],
            "user_id": user["id"],
            "token_id": token["id"],
            "file_id": upload.json()["id"],
            "fine_tuning_job_id": tuning.json()["id"],
            "snapshot_id": snapshot["id"],
            "schedule_id": schedule["id"],
        }
        yield World(client, ids, tokens, names)


@pytest.fixture(scope="module")
def endpoints(world: World) -> list[Endpoint]:
    return endpoints_of(world.client.app)  # type: ignore[arg-type]


def test_the_walk_covers_the_api_the_ui_pages_and_the_review_routes(endpoints: list[Endpoint]) -> None:
    served = {(e.method, e.path) for e in endpoints}
    for expected in [
        ("GET", "/ui"),
        ("GET", "/ui/datasets/{dataset_id}"),
        ("GET", "/ui/datasets/{dataset_id}/review"),
        ("GET", "/ui/datasets/{dataset_id}/queue"),
        ("GET", "/ui/items/{item_id}"),
        ("POST", "/logout"),
        ("POST", "/v1/datasets/{dataset_id}/review/claim"),
        ("POST", "/v1/items/{item_id}/review"),
        ("POST", "/v1/datasets/{dataset_id}/review/bulk"),
        ("POST", "/v1/items/{item_id}/reopen"),
        ("POST", "/v1/users"),
        ("DELETE", "/v1/tokens/{token_id}"),
        ("POST", "/v1/datasets/{dataset_id}/generations"),
        ("POST", "/v1/schedules"),
        ("PATCH", "/v1/schedules/{schedule_id}"),
        ("GET", "/v1/schedules/{schedule_id}/runs"),
        ("GET", "/v1/jobs"),
        ("GET", "/ui/jobs"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/metrics"),
        ("GET", "/v1/usage"),
        ("GET", "/v1/workers"),
    ]:
        assert expected in served, f"{expected} is not in the walk"
    assert len(endpoints) >= 50
    # Every row of the role table is exercised by at least one route.
    assert {e.permission for e in endpoints} == {*Permission, None}


def test_the_public_routes_are_exactly_the_known_few(world: World, endpoints: list[Endpoint]) -> None:
    public = {(e.method, e.path) for e in endpoints if e.permission is None}
    assert public == PUBLIC_ROUTES
    assert mounts_of(world.client.app) == ["/static"] == list(PUBLIC_MOUNTS)  # type: ignore[arg-type]


def test_without_credentials_every_other_route_is_401(world: World, endpoints: list[Endpoint]) -> None:
    world.client.cookies.clear()
    problems = []
    for endpoint in endpoints:
        if endpoint.permission is None:
            continue
        response = world.call(endpoint)
        if response.status_code != 401:
            problems.append(f"{endpoint}: {response.status_code} {response.text[:200]}")
        elif endpoint.path.startswith("/ui") or endpoint.path == "/logout":
            if 'action="/login"' not in response.text or "text/html" not in response.headers["content-type"]:
                problems.append(f"{endpoint}: a 401 without the login form")
        elif response.headers.get("www-authenticate") != "Bearer" or "detail" not in response.json():
            problems.append(f"{endpoint}: a 401 without WWW-Authenticate and a JSON detail")
    assert not problems, "\n".join(problems)


def test_the_public_routes_answer_without_credentials(world: World) -> None:
    client = world.client
    client.cookies.clear()
    assert client.get("/healthz").status_code == 200
    metrics = client.get("/metrics")  # Prometheus scrapes without a token
    assert metrics.status_code == 200 and "sprout_fleet_scrape_error 0.0" in metrics.text
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/static/common.js").status_code == 200
    home = client.get("/", follow_redirects=False)
    assert (home.status_code, home.headers["location"]) == (303, "/ui")
    form = client.get("/login")
    assert form.status_code == 200 and 'action="/login"' in form.text
    # The UI page asked for shows the login form, which brings the reader back to it afterwards.
    asked = client.get(f"/ui/datasets/{world.ids['dataset_id']}/queue?status=pending")
    assert asked.status_code == 401
    assert f'name="next" value="/ui/datasets/{world.ids["dataset_id"]}/queue?status=pending"' in asked.text


def _walk_as(world: World, endpoints: list[Endpoint], role: Role, headers: dict[str, str]) -> list[str]:
    allowed = ROLE_PERMISSIONS[role]
    problems = []
    for endpoint in endpoints:
        if endpoint.permission is None:
            continue
        response = world.call(endpoint, headers)
        if endpoint.permission in allowed:
            if response.status_code in (401, 403):
                problems.append(f"{endpoint} (needs {endpoint.permission}): refused {response.status_code}")
        elif response.status_code != 403:
            problems.append(f"{endpoint} (needs {endpoint.permission}): {response.status_code}, not 403")
        elif endpoint.path.startswith("/ui"):
            if "text/html" not in response.headers["content-type"]:
                problems.append(f"{endpoint}: a 403 page that is not HTML")
        elif f"needs '{endpoint.permission.value}'" not in response.json()["detail"]:
            problems.append(f"{endpoint}: a 403 that does not name the permission: {response.text}")
    return problems


@pytest.mark.parametrize("role", list(Role))
def test_a_token_of_each_role_gets_exactly_what_the_role_table_allows(
    world: World, endpoints: list[Endpoint], role: Role
) -> None:
    world.client.cookies.clear()
    problems = _walk_as(world, endpoints, role, bearer(world.tokens[role]))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("role", list(Role))
def test_a_browser_session_of_each_role_gets_exactly_what_the_role_table_allows(
    world: World, endpoints: list[Endpoint], role: Role
) -> None:
    cookie, csrf = log_in(world.client, world.names[role], PASSWORD)
    headers = {"Cookie": f"sprout_session={cookie}", "X-CSRF-Token": csrf}
    problems = _walk_as(world, endpoints, role, headers)
    assert not problems, "\n".join(problems)


def test_a_browser_session_changing_anything_without_its_csrf_token_is_refused(
    world: World, endpoints: list[Endpoint]
) -> None:
    client = world.client
    admin = bearer(world.tokens[Role.admin])
    spare = client.post("/v1/tokens", json={"user": "target", "name": "spare"}, headers=admin).json()
    cookie, csrf = log_in(client, world.names[Role.admin], PASSWORD)
    session = {"Cookie": f"sprout_session={cookie}"}
    unsafe = [e for e in endpoints if e.permission is not None and e.method not in ("GET", "HEAD")]
    assert len(unsafe) >= 20
    problems = []
    for extra in (
        {},
        {"X-CSRF-Token": "not-the-token"},
        {"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
    ):
        for endpoint in unsafe:
            url = world.url(endpoint).replace(
                f"/v1/tokens/{world.ids['token_id']}", f"/v1/tokens/{spare['id']}"
            )
            body: dict[str, Any] = {"json": {}} if endpoint.method != "DELETE" else {}
            response = client.request(
                endpoint.method, url, headers={**session, **extra}, follow_redirects=False, **body
            )
            if response.status_code != 403:
                problems.append(f"{endpoint} with {extra}: {response.status_code}")
    assert not problems, "\n".join(problems)
    # Refused before it ran: the token is not revoked and the session did not log out.
    listed = {t["id"]: t for t in client.get("/v1/tokens", headers=admin).json()}
    assert listed[spare["id"]]["revoked_at"] is None
    assert client.get("/v1/me", headers=session).json()["via"] == "session"


def test_reviewers_cannot_create_jobs_import_data_or_manage_users_and_services_cannot_review(
    world: World,
) -> None:
    """The issue's own sentences, pinned to routes: if one of these routes declared a weaker permission, the
    walk above would still pass; this would not."""
    dataset, item = world.ids["dataset_id"], world.ids["item_id"]
    client = world.client
    client.cookies.clear()
    reviewer, service = bearer(world.tokens[Role.reviewer]), bearer(world.tokens[Role.service])
    seeds = {"file": ("s.jsonl", SEEDS)}
    for method, url, kwargs in [
        ("POST", f"/v1/datasets/{dataset}/generations", {"json": {"count": 1}}),
        ("POST", f"/v1/datasets/{dataset}/seeds", {"files": seeds}),
        ("POST", f"/v1/datasets/{dataset}/items/import", {"files": seeds}),
        ("POST", "/v1/datasets", {"json": {"name": "by-a-reviewer"}}),
        (
            "POST",
            "/v1/schedules",
            {"json": {"name": "by-a-reviewer", "dataset_id": dataset, "cron": "@daily"}},
        ),
        ("GET", "/v1/users", {}),
        ("POST", "/v1/users", {"json": {"name": "made-by-reviewer", "role": "admin"}}),
        ("POST", "/v1/tokens", {"json": {"user": world.names[Role.admin]}}),
        ("GET", "/v1/audit", {}),
    ]:
        assert client.request(method, url, headers=reviewer, **kwargs).status_code == 403, url
    for method, url, kwargs in [
        ("POST", f"/v1/datasets/{dataset}/review/claim", {"json": {"n": 1}}),
        ("POST", f"/v1/items/{item}/review", {"json": {"decision": "approve", "version": 1}}),
        ("GET", "/v1/users", {}),
        ("POST", "/v1/tokens", {"json": {"user": world.names[Role.admin]}}),
    ]:
        assert client.request(method, url, headers=service, **kwargs).status_code == 403, url
    names = {u["name"] for u in client.get("/v1/users", headers=bearer(world.tokens[Role.admin])).json()}
    assert "made-by-reviewer" not in names


def test_everyone_sees_the_jobs_and_only_each_kind_s_permission_offers_or_does_a_cancel(world: World) -> None:
    """GET /v1/jobs and the jobs page need only `read`; a row's cancel_url is its kind's own cancel route, which
    a reviewer is refused, and the page offers Cancel per kind only to roles that may cancel that kind."""
    client = world.client
    client.cookies.clear()
    reviewer = bearer(world.tokens[Role.reviewer])
    rows = client.get("/v1/jobs", headers=reviewer).json()["data"]
    assert {(r["kind"], r["id"]) for r in rows} >= {
        ("generation", world.ids["job_id"]),
        ("fine_tune", next(r["id"] for r in rows if r["public_id"] == world.ids["fine_tuning_job_id"])),
    }
    for row in rows:
        if row["cancel_url"]:
            assert client.post(row["cancel_url"], headers=reviewer).status_code == 403, row["cancel_url"]
    for role, offered in [
        (Role.reviewer, ""),
        (Role.service, "generation fine_tune"),
        (Role.admin, "generation fine_tune"),
    ]:
        cookie, _ = log_in(client, world.names[role], PASSWORD)
        page_html = client.get("/ui/jobs", headers={"Cookie": f"sprout_session={cookie}"}).text
        assert f'data-can-cancel="{offered}"' in page_html, role
        assert '<a href="/ui/jobs">Jobs</a>' in page_html


# --- a route that forgets its permission -------------------------------------------------------------------


def test_create_app_refuses_to_start_with_a_route_that_declares_no_permission(monkeypatch, tmp_path) -> None:
    forgetful = APIRouter()

    @forgetful.get("/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {"secret": "anyone can read this"}

    patched = APIRouter()
    patched.include_router(api_router)
    patched.include_router(forgetful)
    monkeypatch.setattr(app.main, "api_router", patched)
    with pytest.raises(RuntimeError, match=r"/v1/forgotten must declare exactly one permission"):
        create_app(make_settings(f"sqlite:///{tmp_path / 'x.db'}"))


def test_create_app_starts_with_the_real_routes(tmp_path) -> None:
    """The check above is not simply always failing."""
    create_app(make_settings(f"sqlite:///{tmp_path / 'x.db'}"))


def bare_app() -> FastAPI:
    """An app without FastAPI's own docs routes (Sprout serves those behind auth)."""
    return FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


def _no_permission(router: APIRouter) -> None:
    router.add_api_route("/v1/open", lambda: {}, methods=["POST"])


def _two_permissions(router: APIRouter) -> None:
    def both(_: Reader, __: UserManager) -> dict[str, str]:
        return {}

    router.add_api_route("/v1/both", both, methods=["GET"])


def _public_and_a_permission(router: APIRouter) -> None:
    def confused(_: DatasetManager) -> dict[str, str]:
        return {}

    router.add_api_route("/v1/confused", confused, methods=["GET"], dependencies=[Public])


@pytest.mark.parametrize("declare", [_no_permission, _two_permissions, _public_and_a_permission])
def test_a_route_must_declare_exactly_one_permission(declare) -> None:  # noqa: ANN001
    router = APIRouter()
    declare(router)
    fastapi_app = bare_app()
    fastapi_app.include_router(router)
    with pytest.raises(RuntimeError, match="must declare exactly one permission"):
        check_every_route_declares_access(fastapi_app.routes, PUBLIC_MOUNTS)


def test_plain_routes_and_unknown_mounts_are_refused_too() -> None:
    plain = bare_app()
    plain.router.routes.append(Route("/raw", lambda _request: None))
    with pytest.raises(RuntimeError, match="/raw.*no access rule"):
        check_every_route_declares_access(plain.routes, PUBLIC_MOUNTS)
    mounted = bare_app()
    mounted.mount("/files", FastAPI())
    with pytest.raises(RuntimeError, match="mount /files is not a known public mount"):
        check_every_route_declares_access(mounted.routes, PUBLIC_MOUNTS)


def test_routes_with_one_permission_or_public_or_a_page_permission_pass() -> None:
    router = APIRouter()

    def read(_: Reader) -> dict[str, str]:
        return {}

    def shown(_: Annotated[Principal, page(Permission.review)]) -> dict[str, str]:
        return {}

    router.add_api_route("/v1/read", read, methods=["GET"])
    router.add_api_route("/open", lambda: {}, methods=["GET"], dependencies=[Public])
    router.add_api_route("/ui/shown", shown, methods=["GET"])
    fastapi_app = bare_app()
    fastapi_app.include_router(router)
    check_every_route_declares_access(fastapi_app.routes, PUBLIC_MOUNTS)
    declared = {path: access_of(route) for path, route in flat_routes(fastapi_app.routes)}
    assert declared == {"/v1/read": [Permission.read], "/open": [None], "/ui/shown": [Permission.review]}
