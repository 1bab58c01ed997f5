"""Usage (GET /v1/usage, `sprout usage`) and the fleet's workers (GET /v1/workers, `sprout workers`), on SQLite
and PostgreSQL: every sum equals the sum of the job rows it covers, filters narrow it, jobs come in pages."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from app.auth.roles import Role
from app.cli import app as cli
from app.cli import common
from app.core.config import get_settings
from app.core.db import transaction, utc_now
from app.datasets.seed_formats import SeedInstance, SeedTaskIn
from app.datasets.service import create_dataset, import_seeds
from app.generation.params import GenerationParams
from app.generation.service import queue_job
from app.jobs.models import JobStatus, WorkerProcess
from app.llm.registry import BackendRegistry
from app.main import create_app
from tests.support.databases import fresh_postgres_database
from tests.support.service import bearer, make_settings, new_user_token

FIGURES = (
    "requests",
    "prompts",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "busy_seconds",
    "parsed",
    "duplicates",
    "accepted",
)
BACKENDS = {
    name: {"kind": "openai", "base_url": f"http://127.0.0.1:9/{name}/v1", "model": "m"}
    for name in ("alpha", "beta")
}
DATASETS = ("one", "two [b]")  # a name that rich would read as markup, printed as it is
NOW = datetime.now(UTC)


@dataclass(frozen=True)
class JobRow:
    id: int
    dataset: str
    dataset_id: int
    backend: str
    created_at: datetime
    figures: dict[str, Any]


@dataclass
class World:
    client: TestClient
    jobs: list[JobRow]
    dataset_ids: dict[str, int]
    database_url: str


def expected(jobs: list[JobRow]) -> dict[str, Any]:
    sums: dict[str, Any] = {name: sum(j.figures[name] for j in jobs) for name in FIGURES}
    sums["jobs"] = len(jobs)
    sums["total_tokens"] = sums["prompt_tokens"] + sums["completion_tokens"]
    sums["acceptance_rate"] = sums["accepted"] / sums["parsed"] if sums["parsed"] else None
    sums["accepted_per_1k_completion_tokens"] = (
        1000 * sums["accepted"] / sums["completion_tokens"] if sums["completion_tokens"] else None
    )
    return sums


def figures_of(row: dict[str, Any]) -> dict[str, Any]:
    keys = (*FIGURES, "jobs", "total_tokens", "acceptance_rate", "accepted_per_1k_completion_tokens")
    return {k: row[k] for k in keys}


def same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-9), key
        else:
            assert got[key] == value, key


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database of each kind for the whole module: the tests only read the jobs the world wrote."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('usage') / 'sprout.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def world(database_url: str) -> Iterator[World]:
    settings = make_settings(database_url, worker_enabled=False, backends=BACKENDS, default_backend="alpha")
    registry = BackendRegistry.from_settings(settings)
    rng = random.Random(7)
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {new_user_token(client, Role.reviewer)}"
        jobs: list[JobRow] = []
        ids: dict[str, int] = {}
        with transaction(client.app.state.sessions) as session:
            for name in DATASETS:
                dataset = create_dataset(session, name)
                import_seeds(
                    session,
                    dataset,
                    [SeedTaskIn(instruction="Say hi.", instances=(SeedInstance("", "Hi"),))],
                    "t",
                )
                ids[name] = dataset.id
            for n in range(9):
                name, backend = DATASETS[n % 2], ("alpha", "beta", "beta")[n % 3]
                job = queue_job(
                    session, ids[name], GenerationParams(count=5, backend=backend), settings, registry
                )
                parsed = rng.randint(0, 400)
                accepted = rng.randint(0, parsed)
                figures = {
                    "requests": rng.randint(0, 200),
                    "prompts": rng.randint(0, 400),
                    "errors": rng.randint(0, 9),
                    "prompt_tokens": rng.randint(0, 10**9),  # big enough to need BIGINT sums
                    "completion_tokens": 0 if n == 4 else rng.randint(1, 10**9),
                    "busy_seconds": rng.uniform(0, 5000),
                    "parsed": parsed,
                    "duplicates": rng.randint(0, parsed - accepted),
                    "accepted": accepted,
                }
                for key, value in figures.items():
                    setattr(job, key, value)
                job.raw = parsed + rng.randint(0, 5)
                job.status = JobStatus.succeeded if n % 4 else JobStatus.running
                if job.status is JobStatus.running:
                    job.worker_id, job.lease_until = "w", NOW + timedelta(minutes=5)
                job.created_at = NOW - timedelta(days=n)
                jobs.append(JobRow(job.id, name, ids[name], backend, job.created_at, figures))
                session.flush()
        yield World(client, jobs, ids, database_url)


def test_sums_per_dataset_and_per_backend_equal_the_job_rows(world: World) -> None:
    by_dataset = world.client.get("/v1/usage").json()  # by=dataset is the default
    assert by_dataset["by"] == "dataset"
    assert {row["dataset"] for row in by_dataset["data"]} == set(DATASETS)
    for row in by_dataset["data"]:
        assert row["dataset_id"] == world.dataset_ids[row["dataset"]] and row["job_id"] is None
        same(figures_of(row), expected([j for j in world.jobs if j.dataset == row["dataset"]]))
    same(figures_of(by_dataset["total"]), expected(world.jobs))

    by_backend = world.client.get("/v1/usage", params={"by": "backend"}).json()
    assert [row["backend"] for row in by_backend["data"]] == sorted(
        ("alpha", "beta"),
        key=lambda b: -expected([j for j in world.jobs if j.backend == b])["completion_tokens"],
    )  # the largest consumer first
    for row in by_backend["data"]:
        same(figures_of(row), expected([j for j in world.jobs if j.backend == row["backend"]]))
    same(figures_of(by_backend["total"]), expected(world.jobs))


def test_jobs_come_in_pages_each_with_its_own_figures(world: World) -> None:
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"by": "job", "limit": 4, **({"cursor": cursor} if cursor else {})}
        page = world.client.get("/v1/usage", params=params).json()
        pages += 1
        same(figures_of(page["total"]), expected(world.jobs))  # the total covers every page
        seen.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [row["job_id"] for row in seen] == sorted((j.id for j in world.jobs), reverse=True)
    rows = {j.id: j for j in world.jobs}
    for row in seen:
        job = rows[row["job_id"]]
        assert (row["dataset"], row["dataset_id"], row["backend"]) == (
            job.dataset,
            job.dataset_id,
            job.backend,
        )
        assert row["status"] in ("succeeded", "running") and row["jobs"] == 1
        same(figures_of(row), expected([job]))
    no_tokens = next(row for row in seen if row["completion_tokens"] == 0)
    assert no_tokens["accepted_per_1k_completion_tokens"] is None


def test_filters_narrow_every_figure(world: World) -> None:
    one = world.dataset_ids["one"]
    since, until = NOW - timedelta(days=5, hours=1), NOW - timedelta(days=1, hours=1)  # jobs of days 2..5
    cases = [
        ({"dataset_id": one}, lambda j: j.dataset == "one"),
        ({"backend": "beta"}, lambda j: j.backend == "beta"),
        ({"since": since.isoformat()}, lambda j: j.created_at >= since),
        ({"since": since.isoformat(), "until": until.isoformat()}, lambda j: since <= j.created_at < until),
        (
            {"dataset_id": one, "backend": "alpha", "until": until.isoformat()},
            lambda j: j.dataset == "one" and j.backend == "alpha" and j.created_at < until,
        ),
    ]
    for params, keep in cases:
        matching = [j for j in world.jobs if keep(j)]
        assert matching, params
        for by in ("dataset", "backend", "job"):
            body = world.client.get("/v1/usage", params={**params, "by": by}).json()
            same(figures_of(body["total"]), expected(matching))
            assert sum(row["jobs"] for row in body["data"]) == len(matching), (params, by)
    # A time without a zone is UTC.
    naive = world.client.get("/v1/usage", params={"since": since.replace(tzinfo=None).isoformat()}).json()
    assert naive["total"]["jobs"] == len([j for j in world.jobs if j.created_at >= since])
    nothing = world.client.get("/v1/usage", params={"backend": "nobody"}).json()
    assert (
        nothing["data"] == []
        and nothing["total"]["jobs"] == 0
        and nothing["total"]["acceptance_rate"] is None
    )


def test_bad_requests(world: World) -> None:
    client = world.client
    for params in (
        {"by": "user"},
        {"by": ""},
        {"limit": 0},
        {"since": "yesterday"},
        {"since": NOW.isoformat(), "until": (NOW - timedelta(seconds=1)).isoformat()},
        {"cursor": "x"},
    ):
        response = client.get("/v1/usage", params=params)
        assert response.status_code == 422, (params, response.text)
    detail = client.get("/v1/usage", params={"by": "user"}).json()["detail"][0]
    assert detail["loc"] == ["query", "by"]
    assert client.get("/v1/usage", params={"dataset_id": 999_999}).status_code == 404
    assert client.get("/v1/usage", headers={"Authorization": "Bearer nope"}).status_code == 401


# --- the CLI -----------------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("SPROUT_DATABASE_URL", world.database_url)
    for console in (
        common.console,
        common.err,
    ):  # wide enough that rich does not wrap what the tests look for
        monkeypatch.setattr(console, "width", 250)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_the_cli_prints_the_same_sums(world: World, cli_env: CliRunner) -> None:
    for args in (
        [],
        ["--by", "backend"],
        ["--by", "job", "--limit", "100"],
        ["--dataset", "two [b]", "--backend", "beta"],
        ["--since", (NOW - timedelta(days=3, hours=1)).isoformat()],
    ):
        result = cli_env.invoke(cli, ["usage", "--json", *args])
        assert result.exit_code == 0, result.output
        printed = json.loads(result.output)
        params: dict[str, Any] = {"by": "dataset", "limit": 100}
        for flag, value in zip(args[::2], args[1::2], strict=True):
            key = flag.removeprefix("--")
            params["dataset_id" if key == "dataset" else key] = world.dataset_ids.get(value, value)
        api = world.client.get("/v1/usage", params=params).json()
        assert printed["total"] == api["total"], args
        assert printed["data"] == api["data"], args

    table = cli_env.invoke(cli, ["usage"])
    assert table.exit_code == 0, table.output
    assert "two [b]" in table.output and "one" in table.output and "total" in table.output
    total = expected(world.jobs)
    assert str(total["completion_tokens"]) in table.output and str(total["requests"]) in table.output
    jobs = cli_env.invoke(cli, ["usage", "--by", "job", "--limit", "2"])
    assert jobs.exit_code == 0 and "showing the newest 2 of 9 jobs" in jobs.output
    for args, message in (
        (["--dataset", "nope"], "dataset 'nope' not found"),
        (["--since", "soon"], "--since must be an ISO 8601 time"),
        (["--since", "2025-02-01", "--until", "2025-01-01"], "--until must be later than --since"),
        (["--by", "user"], "user"),
    ):
        result = cli_env.invoke(cli, ["usage", *args])
        assert result.exit_code == 2 and message in result.output, result.output


# --- workers -----------------------------------------------------------------------------------------------------


def test_workers_by_state_in_the_api_and_the_cli(world: World, cli_env: CliRunner) -> None:
    with transaction(world.client.app.state.sessions) as session:
        for name, seconds_ago, stopped in (
            ("w-live", 0, False),
            ("w-dead", 600, False),
            ("w-gone", 60, True),
        ):
            session.add(WorkerProcess(id=name, kind="worker", hostname="box [x]", pid=42, version="1"))
            session.flush()
            session.execute(
                update(WorkerProcess)
                .where(WorkerProcess.id == name)
                .values(heartbeat_at=utc_now(-seconds_ago), stopped_at=utc_now() if stopped else None)
            )
    listed = world.client.get("/v1/workers").json()
    assert {w["id"]: w["state"] for w in listed} == {
        "w-live": "alive",
        "w-dead": "stale",
        "w-gone": "stopped",
    }
    dead = next(w for w in listed if w["id"] == "w-dead")
    assert 599 <= dead["heartbeat_age_seconds"] < 700 and dead["hostname"] == "box [x]" and dead["pid"] == 42
    stale = world.client.get("/v1/workers", params={"state": ["stale", "stopped"]}).json()
    assert sorted(w["id"] for w in stale) == ["w-dead", "w-gone"]
    assert world.client.get("/v1/workers", params={"state": "zombie"}).status_code == 422

    printed = cli_env.invoke(cli, ["workers", "--json", "--state", "alive"])
    assert printed.exit_code == 0, printed.output
    assert [w["id"] for w in json.loads(printed.output)] == ["w-live"]
    table = cli_env.invoke(cli, ["workers"])
    assert table.exit_code == 0, table.output
    assert "box [x]" in table.output and "1 alive, 1 stale, 1 stopped" in table.output
    assert world.client.get("/v1/workers", headers=bearer("sprout_wrong")).status_code == 401
