"""`GET /v1/jobs` on SQLite and PostgreSQL: generation and fine-tuning jobs in one list, newest first; the
filters (kind, status repeated or as a comma list, dataset, active); keyset pages that neither skip nor repeat a
job, also across kinds created at the same instant; the progress figures (accepted of requested; training steps
of the total from the latest metrics event); a job waiting out a retry; and who may read and cancel.

Jobs are made by the services (queue_job, create_snapshot + create_job) and moved by the queue's own calls
(claim, fenced counter writes, finish, retry, cancel), in an app whose worker is off so nothing else moves them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.auth.roles import Role
from app.core.config import DEFAULT_MODEL_NAME, Settings
from app.core.db import transaction
from app.datasets.seed_formats import SeedInstance, SeedTaskIn
from app.datasets.service import create_dataset, import_seeds
from app.finetune import service as finetune
from app.finetune.models import FineTuneJob
from app.finetune.schemas import JobCreate
from app.finetune.snapshots import create_snapshot
from app.generation.models import GenerationJob
from app.generation.params import GenerationParams
from app.generation.service import queue_job
from app.jobs.models import JobStatus
from app.jobs.queue import Claim, claim_next, fenced_update, finish, retry_later
from tests.support.items import add_items
from tests.support.service import bearer, make_settings, new_user_token, running_service

SEEDS = [SeedTaskIn(instruction="Name a colour of the sky at noon.", instances=(SeedInstance("", "Blue"),))]


@dataclass
class Jobs:
    """An app (worker off) and helpers that make and move jobs through the services."""

    client: TestClient
    settings: Settings

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.client.app.state.sessions  # type: ignore[attr-defined,no-any-return]

    def dataset(self, name: str, *, approved: int = 0) -> int:
        with transaction(self.sessions) as session:
            dataset = create_dataset(session, name)
            import_seeds(session, dataset, SEEDS, source="test")
            if approved:
                add_items(session, dataset.id, approved)
            return dataset.id

    def generation(self, dataset_id: int, count: int = 10, **params: Any) -> int:
        registry = self.client.app.state.backends  # type: ignore[attr-defined]
        with transaction(self.sessions) as session:
            job = queue_job(
                session, dataset_id, GenerationParams(count=count, **params), self.settings, registry
            )
            return job.id

    def fine_tune(self, dataset_id: int) -> tuple[int, str]:
        with transaction(self.sessions) as session:
            snapshot = create_snapshot(session, dataset_id, created_by="tester", settings=self.settings)
            files = finetune.file_ids(session, [snapshot])
            body = JobCreate(model=DEFAULT_MODEL_NAME, training_file=files[snapshot.training_file_id])
            job = finetune.create_job(
                session, body, self.settings, "tester", dataset_id=dataset_id, snapshot_id=snapshot.id
            )
            return job.id, job.public_id

    def claim(self, model: type[GenerationJob] | type[FineTuneJob], job_id: int, worker: str) -> Claim:
        with transaction(self.sessions) as session:
            claim = claim_next(session, model, worker, 60.0, job_id=job_id)
        assert claim is not None
        return claim

    def write(self, model: type[GenerationJob] | type[FineTuneJob], claim: Claim, **values: Any) -> None:
        with transaction(self.sessions) as session:
            fenced_update(session, model, claim, **values)

    def finish(
        self, model: type[GenerationJob] | type[FineTuneJob], claim: Claim, status: JobStatus, **values: Any
    ) -> None:
        with transaction(self.sessions) as session:
            finish(session, model, claim, status, **values)

    def metrics(self, job_id: int, step: int, total: int | None) -> None:
        data: dict[str, Any] = {"step": step, "train_loss": 1.5}
        if total is not None:
            data["total_steps"] = total
        with transaction(self.sessions) as session:
            finetune.add_event(session, job_id, f"Step {step}/{total}", type_="metrics", data=data)

    def list(self, client: TestClient | None = None, **params: Any) -> dict[str, Any]:
        response = (client or self.client).get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def everything(self, limit: int, **params: Any) -> list[dict[str, Any]]:
        """Every page, following next_cursor."""
        rows: list[dict[str, Any]] = []
        after = None
        for _ in range(100):
            page = self.list(limit=limit, **params, **({"after": after} if after else {}))
            assert len(page["data"]) <= limit
            rows += page["data"]
            after = page["next_cursor"]
            if after is None:
                return rows
        raise AssertionError("the pages never ended")


@pytest.fixture
def jobs(database_url: str) -> Iterator[Jobs]:
    settings = make_settings(database_url, worker_enabled=False, finetune_min_examples=1)
    with running_service(settings) as client:
        yield Jobs(client, settings)


def keys(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(r["kind"], r["id"]) for r in rows]


def test_both_kinds_in_one_list_newest_first_with_their_figures(jobs: Jobs) -> None:
    alpha = jobs.dataset("alpha", approved=12)
    beta = jobs.dataset("beta")
    queued = jobs.generation(alpha, count=10)
    ft_id, ft_public = jobs.fine_tune(alpha)
    running = jobs.generation(beta, count=4, backend="local")
    done = jobs.generation(beta, count=2)

    claim = jobs.claim(GenerationJob, running, "worker-a")
    jobs.write(
        GenerationJob,
        claim,
        requests=3,
        prompts=3,
        raw=6,
        parsed=5,
        filtered={"too_short": 1},
        duplicates=1,
        accepted=3,
        errors=1,
        prompt_tokens=300,
        completion_tokens=120,
        busy_seconds=2.5,
    )
    finished = jobs.claim(GenerationJob, done, "worker-b")
    jobs.finish(
        GenerationJob, finished, JobStatus.succeeded, message="2 items accepted", accepted=2, parsed=2, raw=2
    )

    page = jobs.list()
    assert page["next_cursor"] is None
    assert keys(page["data"]) == [
        ("generation", done),
        ("generation", running),
        ("fine_tune", ft_id),
        ("generation", queued),
    ]
    by_key = {(r["kind"], r["id"]): r for r in page["data"]}

    row = by_key[("generation", running)]
    assert row["dataset"] == {"id": beta, "name": "beta"}
    assert row["status"] == "running" and row["attempt"] == 1 and row["worker_id"] == "worker-a"
    assert row["backend"] == "local" and row["public_id"] is None and row["stage"] is None
    assert row["progress"] == {"done": 3, "total": 4, "fraction": 0.75}
    assert row["counters"] == {
        "requests": 3,
        "prompts": 3,
        "raw": 6,
        "parsed": 5,
        "filtered": 1,
        "duplicates": 1,
        "accepted": 3,
        "errors": 1,
    }
    assert row["tokens"] == {"prompt": 300, "completion": 120, "trained": None, "total": 420}
    assert row["busy_seconds"] == 2.5
    assert row["started_at"] is not None and row["finished_at"] is None
    assert row["url"] == f"/v1/generations/{running}"
    assert row["cancel_url"] == f"/v1/generations/{running}/cancel"

    row = by_key[("generation", done)]
    assert row["status"] == "succeeded" and row["message"] == "2 items accepted"
    assert row["progress"] == {"done": 2, "total": 2, "fraction": 1.0}
    assert row["finished_at"] is not None and row["cancel_url"] is None and row["worker_id"] is None

    row = by_key[("generation", queued)]
    assert row["status"] == "queued" and row["attempt"] == 0 and row["progress"]["done"] == 0

    row = by_key[("fine_tune", ft_id)]
    assert row["public_id"] == ft_public and row["dataset"] == {"id": alpha, "name": "alpha"}
    assert row["status"] == "queued" and row["stage"] == "validating_files"
    assert row["model"] == DEFAULT_MODEL_NAME and row["backend"] is None and row["counters"] is None
    assert row["progress"] is None  # no step reported yet
    assert row["tokens"] == {"prompt": None, "completion": None, "trained": None, "total": 0}
    assert row["url"] == f"/v1/fine_tuning/jobs/{ft_public}"
    assert row["cancel_url"] == f"/v1/fine_tuning/jobs/{ft_public}/cancel"


def test_filters_by_kind_status_dataset_and_activity(jobs: Jobs) -> None:
    alpha = jobs.dataset("alpha", approved=12)
    beta = jobs.dataset("beta", approved=12)
    g_queued = jobs.generation(alpha)
    g_running = jobs.generation(beta)
    g_failed = jobs.generation(alpha)
    ft_alpha, _ = jobs.fine_tune(alpha)
    ft_beta, _ = jobs.fine_tune(beta)
    jobs.claim(GenerationJob, g_running, "w")
    jobs.finish(
        GenerationJob, jobs.claim(GenerationJob, g_failed, "w"), JobStatus.failed, error="backend gone"
    )
    ft_claim = jobs.claim(FineTuneJob, ft_beta, "w")

    def listed(**params: Any) -> set[tuple[str, int]]:
        return set(keys(jobs.list(**params)["data"]))

    generation = {("generation", g_queued), ("generation", g_running), ("generation", g_failed)}
    fine_tune = {("fine_tune", ft_alpha), ("fine_tune", ft_beta)}
    assert listed() == generation | fine_tune
    assert listed(kind="generation") == generation
    assert listed(kind="fine_tune") == fine_tune
    assert listed(kind="generation,fine_tune") == generation | fine_tune
    assert listed(status="running") == {("generation", g_running), ("fine_tune", ft_beta)}
    assert listed(status=["queued", "failed"]) == {
        ("generation", g_queued),
        ("generation", g_failed),
        ("fine_tune", ft_alpha),
    }
    assert listed(status="queued,failed") == listed(status=["queued", "failed"])
    assert listed(active="true") == {
        ("generation", g_queued),
        ("generation", g_running),
        ("fine_tune", ft_alpha),
        ("fine_tune", ft_beta),
    }
    assert listed(active="false") == {("generation", g_failed)}
    assert listed(active="true", status="failed") == set()  # both must hold
    assert listed(active="true", status="running,failed", kind="generation") == {("generation", g_running)}
    assert listed(dataset_id=alpha) == {
        ("generation", g_queued),
        ("generation", g_failed),
        ("fine_tune", ft_alpha),
    }
    assert listed(dataset_id=beta, kind="fine_tune", active="true") == {("fine_tune", ft_beta)}
    failed = jobs.list(status="failed")["data"][0]
    assert failed["error"] == "backend gone" and failed["cancel_url"] is None

    # The running fine-tuning job, once its files were checked and its trainer reported steps.
    jobs.write(FineTuneJob, ft_claim, files_validated=True)
    (row,) = jobs.list(kind="fine_tune", status="running")["data"]
    assert row["stage"] == "running" and row["worker_id"] == "w" and row["attempt"] == 1

    for params, field in [
        ({"status": "sleeping"}, "status"),
        ({"status": "queued,,nope"}, "status"),
        ({"kind": "import"}, "kind"),
        ({"after": "not-a-cursor"}, "after"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"active": "maybe"}, "active"),
        ({"dataset_id": "x"}, "dataset_id"),
    ]:
        response = jobs.client.get("/v1/jobs", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", field], response.text


def test_keyset_pages_neither_skip_nor_repeat_also_across_kinds_made_at_the_same_instant(jobs: Jobs) -> None:
    alpha = jobs.dataset("alpha", approved=12)
    made: list[tuple[str, int]] = []
    for i in range(9):
        if i % 3 == 2:
            made.append(("fine_tune", jobs.fine_tune(alpha)[0]))
        else:
            made.append(("generation", jobs.generation(alpha)))
    newest_first = list(reversed(made))
    for limit in (1, 2, 4, 9, 50):
        assert keys(jobs.everything(limit)) == newest_first, limit
    assert keys(jobs.everything(2, kind="fine_tune")) == [k for k in newest_first if k[0] == "fine_tune"]

    # Ties: every job created at one instant. Generation jobs come first, each kind by id, newest first.
    instant = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with transaction(jobs.sessions) as session:
        session.execute(update(GenerationJob).values(created_at=instant))
        session.execute(update(FineTuneJob).values(created_at=instant))
    tied = sorted(made, key=lambda k: (k[0] == "generation", k[1]), reverse=True)
    for limit in (1, 2, 3, 5):
        assert keys(jobs.everything(limit)) == tied, limit
    assert jobs.list()["data"][0]["created_at"].startswith("2030-01-02T03:04:05.678901")


def test_progress_of_a_fine_tuning_job_follows_its_latest_metrics_event(jobs: Jobs) -> None:
    alpha = jobs.dataset("alpha", approved=12)
    ft_id, _ = jobs.fine_tune(alpha)
    claim = jobs.claim(FineTuneJob, ft_id, "trainer")
    jobs.write(FineTuneJob, claim, files_validated=True)

    def progress() -> dict[str, Any] | None:
        (row,) = jobs.list(kind="fine_tune")["data"]
        return row["progress"]

    assert progress() is None
    jobs.metrics(ft_id, 1, None)  # a trainer that does not say its total: still unknown
    assert progress() is None
    jobs.metrics(ft_id, 3, 12)
    assert progress() == {"done": 3, "total": 12, "fraction": 0.25}
    with transaction(jobs.sessions) as session:
        finetune.add_event(session, ft_id, "Saved a checkpoint")  # a message event changes nothing
    jobs.metrics(ft_id, 6, 12)
    assert progress() == {"done": 6, "total": 12, "fraction": 0.5}
    jobs.finish(FineTuneJob, claim, JobStatus.succeeded, trained_tokens=4096, fine_tuned_model="ft:x")
    (row,) = jobs.list(kind="fine_tune")["data"]
    assert row["progress"] == {"done": 12, "total": 12, "fraction": 1.0}
    assert row["tokens"]["trained"] == 4096 and row["tokens"]["total"] == 4096
    assert row["fine_tuned_model"] == "ft:x" and row["status"] == "succeeded" and row["cancel_url"] is None


def test_a_job_waiting_out_a_retry_shows_when_it_may_start_again(jobs: Jobs) -> None:
    alpha = jobs.dataset("alpha")
    job_id = jobs.generation(alpha)
    claim = jobs.claim(GenerationJob, job_id, "w")
    with transaction(jobs.sessions) as session:
        retry_later(session, GenerationJob, claim, reason="connection refused", max_attempts=3, initial=60)
    (row,) = jobs.list(active="true")["data"]
    assert row["status"] == "queued" and row["attempt"] == 1 and row["worker_id"] is None
    assert row["not_before"] is not None
    assert datetime.fromisoformat(row["not_before"]) > datetime.fromisoformat(row["created_at"])
    assert "connection refused" in row["message"]


def test_every_role_may_read_the_list_and_only_each_kind_s_own_permission_cancels(jobs: Jobs) -> None:
    alpha = jobs.dataset("alpha", approved=12)
    generation = jobs.generation(alpha)
    jobs.fine_tune(alpha)
    client = jobs.client
    saved = client.headers.pop("Authorization")
    try:
        assert client.get("/v1/jobs").status_code == 401
        reviewer = bearer(new_user_token(client, Role.reviewer))
        service = bearer(new_user_token(client, Role.service))
        rows = client.get("/v1/jobs", headers=reviewer).json()["data"]
        assert len(rows) == 2
        for row in rows:
            assert client.post(row["cancel_url"], headers=reviewer).status_code == 403
        for row in rows:
            assert client.post(row["cancel_url"], headers=service).status_code == 200, row
        after = {r["kind"]: r for r in client.get("/v1/jobs", headers=service).json()["data"]}
        assert after["generation"]["status"] == after["fine_tune"]["status"] == "cancelled"
        assert after["generation"]["id"] == generation and after["generation"]["cancel_url"] is None
    finally:
        client.headers["Authorization"] = saved
