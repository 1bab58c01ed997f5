"""GET /metrics after a real job (a real simulated OpenAI-compatible server in its own process, the real worker),
on SQLite and PostgreSQL: the fleet's figures equal the database's, two instances on one database report the
same fleet, the per-process figures moved, and a database outage does not fail the scrape."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.core.db import create_db_engine, make_session_factory, transaction, utc_now
from app.datasets.models import Dataset
from app.generation.models import GenerationJob, Item
from app.jobs.models import JobStatus, WorkerProcess
from app.main import create_app
from app.schedules.models import Schedule
from tests.integration.ops.scrape import Scrape, fleet_counts, scrape
from tests.support.databases import fresh_postgres_database
from tests.support.service import make_settings, running_service, wait_for_job
from tests.support.sim_server import SimServer, running_sim_server
from tests.support.tcp_proxy import TcpProxy

SEEDS = (
    b'{"instruction": "Give three tips for staying focused while studying.", '
    b'"instances": [{"input": "", "output": "Silence your phone."}]}\n'
)
HEARTBEAT = 0.2


@pytest.fixture(scope="module")
def sim(shared_data: Path) -> Iterator[SimServer]:
    with running_sim_server(pool=str(shared_data / "bench_instructions.jsonl.gz"), seed=3) as server:
        yield server


def database_figures(database_url: str) -> dict[str, object]:
    """What the database says, counted from the rows themselves (not from item_count)."""
    engine = create_db_engine(database_url)
    with make_session_factory(engine)() as session:
        jobs = dict(
            session.execute(select(GenerationJob.status, func.count()).group_by(GenerationJob.status)).all()
        )
        items = {
            (name, status): n
            for name, status, n in session.execute(
                select(Dataset.name, Item.status, func.count())
                .join(Dataset, Dataset.id == Item.dataset_id)
                .group_by(Dataset.name, Item.status)
            )
        }
    engine.dispose()
    return {"jobs": {JobStatus(s).value: n for s, n in jobs.items()}, "items": items}


def assert_fleet_matches_database(page: Scrape, database_url: str) -> None:
    truth = database_figures(database_url)
    for status in JobStatus:
        assert page.value("sprout_jobs", kind="generation", status=status.value) == truth["jobs"].get(
            status.value, 0
        )
        assert page.value("sprout_jobs", kind="fine_tune", status=status.value) == 0
    items = {(labels["dataset"], labels["status"]): n for labels, n in page.samples["sprout_items"]}
    assert {key: n for key, n in items.items() if n} == {
        (d, str(s)): n for (d, s), n in truth["items"].items()
    }


def test_metrics_after_a_real_job_equal_the_database_on_every_instance(
    database_url: str, sim: SimServer
) -> None:
    backend = f"sim-{uuid.uuid4().hex[:8]}"  # this test's own series among the process's counters
    settings = make_settings(
        database_url,
        backends={backend: sim.backend_settings(max_in_flight=4).model_dump()},
        default_backend=backend,
        worker_heartbeat_seconds=HEARTBEAT,
    )
    with running_service(settings) as client:
        dataset_id = client.post("/v1/datasets", json={"name": 'metrics [a] "quoted"'}).json()["id"]
        assert (
            client.post(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("s.jsonl", SEEDS)}).status_code
            == 201
        )
        job_id = client.post(f"/v1/datasets/{dataset_id}/generations", json={"count": 12}).json()["id"]
        job = wait_for_job(client, job_id, timeout=90)
        assert job["status"] == "succeeded", job
        # A second instance on the same database, without a worker: it reports the same fleet.
        other_settings = make_settings(database_url, worker_enabled=False, worker_heartbeat_seconds=HEARTBEAT)
        with TestClient(create_app(other_settings)) as other:
            first, second = scrape(client), scrape(other)
        assert_fleet_matches_database(first, database_url)
        assert fleet_counts(first) == fleet_counts(second)
        for page in (first, second):
            assert page.value("sprout_fleet_scrape_error") == 0
            assert page.value("sprout_queue_depth", kind="generation") == 0
            assert page.value("sprout_queue_oldest_seconds", kind="generation") == 0
            assert page.value("sprout_workers", state="alive") == 1  # the first instance's worker
            assert page.value("sprout_workers", state="stale") == 0
            worker_id = client.app.state.worker.worker_id
            assert page.value("sprout_worker_heartbeat_age_seconds", worker=worker_id) < 3 * HEARTBEAT + 1
            assert page.value("sprout_schedules", state="enabled") == 0
        assert (
            first.value("sprout_items", dataset='metrics [a] "quoted"', status="pending")
            == job["counters"]["accepted"]
        )
        # This process's own figures: the job's requests and tokens against this backend (at least what the job
        # stored: replies that land once its count is reached are not stored), its accept steps, its claim.
        assert (
            first.value("sprout_llm_request_seconds_count", backend=backend)
            >= job["counters"]["requests"] - job["counters"]["errors"]
            > 0
        )
        assert (
            first.value("sprout_llm_tokens_total", backend=backend, type="completion")
            >= job["counters"]["completion_tokens"]
            > 0
        )
        assert (
            first.value("sprout_llm_tokens_total", backend=backend, type="prompt")
            >= job["counters"]["prompt_tokens"]
            > 0
        )
        assert first.value("sprout_accept_step_seconds_count") > 0
        assert first.value("sprout_jobs_claimed_total", kind="generation") >= 1
        assert first.value("sprout_worker_heartbeat_timestamp_seconds", worker=worker_id) > 0
        assert first.types["sprout_accept_step_seconds"] == "histogram"
    # The first instance stopped: its worker says so; jobs queued meanwhile wait in the queue.
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:
        template = session.get(GenerationJob, job_id)
        waiting = [
            GenerationJob(
                dataset_id=dataset_id,
                params=template.params,
                backend=backend,
                seed=i,
                requested=5,
                status=JobStatus.queued,
                filtered={},
            )
            for i in range(3)
        ]
        session.add_all(waiting)
        session.flush()
        # One was queued two minutes ago; one waits out a retry backoff (queued, not claimable yet).
        session.execute(
            update(GenerationJob).where(GenerationJob.id == waiting[0].id).values(created_at=utc_now(-120))
        )
        session.execute(
            update(GenerationJob).where(GenerationJob.id == waiting[2].id).values(not_before=utc_now(3600))
        )
        session.add_all(
            [
                Schedule(
                    name=f"s{i}",
                    dataset_id=dataset_id,
                    backend=backend,
                    cron="* * * * *",
                    created_by="t",
                    **state,
                )
                for i, state in enumerate(
                    [
                        {"enabled": True},
                        {"enabled": True},
                        {"enabled": False},
                        {"enabled": False, "ended_reason": "max_runs"},
                    ]
                )
            ]
        )
    engine.dispose()
    with TestClient(create_app(make_settings(database_url, worker_enabled=False))) as reader:
        page = scrape(reader)
    assert_fleet_matches_database(page, database_url)
    assert page.value("sprout_jobs", kind="generation", status="queued") == 3
    assert page.value("sprout_queue_depth", kind="generation") == 2
    assert 119 <= page.value("sprout_queue_oldest_seconds", kind="generation") < 200
    assert page.value("sprout_workers", state="stopped") == 1
    assert page.value("sprout_workers", state="alive") == 0
    assert page.by("sprout_worker_heartbeat_age_seconds", "worker") == {}  # stopped cleanly: no series
    assert page.by("sprout_schedules", "state") == {"enabled": 2, "paused": 1, "ended": 1}


def test_a_stale_worker_is_told_from_a_live_one(database_url: str) -> None:
    settings = make_settings(database_url, worker_enabled=False, worker_heartbeat_seconds=1.0)
    with TestClient(create_app(settings)) as client:
        with transaction(client.app.state.sessions) as session:
            for name, seconds_ago, stopped in (("live", 1, False), ("dead", 30, False), ("gone", 30, True)):
                session.add(WorkerProcess(id=name, kind="worker", hostname="h", pid=1, version="v"))
                session.flush()
                session.execute(
                    update(WorkerProcess)
                    .where(WorkerProcess.id == name)
                    .values(heartbeat_at=utc_now(-seconds_ago), stopped_at=utc_now() if stopped else None)
                )
        page = scrape(client)
        listed = {w["id"]: w for w in client.get("/v1/workers", headers=_reader(client)).json()}
    assert page.by("sprout_workers", "state") == {"alive": 1, "stale": 1, "stopped": 1}
    ages = page.by("sprout_worker_heartbeat_age_seconds", "worker")
    assert set(ages) == {"live", "dead"} and ages["live"] < 3 <= 29 <= ages["dead"] < 40
    assert {k: v["state"] for k, v in listed.items()} == {"live": "alive", "dead": "stale", "gone": "stopped"}
    assert abs(listed["dead"]["heartbeat_age_seconds"] - ages["dead"]) < 5


def _reader(client: TestClient) -> dict[str, str]:
    from app.auth.roles import Role
    from tests.support.service import bearer, new_user_token

    return bearer(new_user_token(client, Role.reviewer))


@pytest.mark.postgres
def test_a_scrape_while_the_database_is_away_still_answers_and_says_so() -> None:
    with fresh_postgres_database() as url, TcpProxy("127.0.0.1", 5432) as proxy:
        proxied = url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        assert proxied != url
        with TestClient(create_app(make_settings(proxied, worker_enabled=False))) as client:
            before = scrape(client)
            assert before.value("sprout_fleet_scrape_error") == 0
            assert before.value("sprout_jobs", kind="generation", status="queued") == 0
            proxy.cut()
            during = scrape(client)  # 200 all the same
            assert during.value("sprout_fleet_scrape_error") == 1
            assert "sprout_jobs" not in during.samples and "sprout_items" not in during.samples
            assert (
                "sprout_accept_step_seconds_count" in during.samples
            )  # the process's own figures are served
            proxy.restore()
            after = scrape(client)
            assert after.value("sprout_fleet_scrape_error") == 0
            assert fleet_counts(after) == fleet_counts(before)
