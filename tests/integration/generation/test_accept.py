"""One accept step per dataset: two jobs generating into one dataset at once, in one process and in two,
on SQLite and on a real PostgreSQL server, never accept near-duplicates of each other.

The server (tests/support/sim_server.py, its own process) draws every task from a small pool of real
instructions, mutated a little, so both jobs really are offered near-duplicates of each other's items: the
test checks that they were, and that each such item was caught with the other job's item as its neighbour.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app.core.db import PROJECT_ROOT, create_db_engine, make_session_factory, run_migrations, transaction
from app.datasets.seed_formats import parse_seed_file
from app.datasets.service import create_dataset, import_seeds
from app.dedup import NearDuplicateIndex
from app.dedup.rouge import rouge_l_f1
from app.dedup.tokenize import tokenize
from app.generation.models import GenerationJob, Item, ItemStatus
from app.jobs.models import JobStatus
from tests.support.service import make_settings, running_service, wait_for_job
from tests.support.sim_server import SimServer, running_sim_server, usable

pytestmark = pytest.mark.slow

THRESHOLD = 0.7
JOB = {"count": 20, "max_prompts": 400, "tasks_per_prompt": 3, "rouge_threshold": THRESHOLD}


@pytest.fixture(scope="module")
def sim(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    """A server drawing from 45 mutually distinct real instructions: enough for both jobs. counts, few enough
    that each job is offered the other's items again and again."""
    index = NearDuplicateIndex(rouge_threshold=0.4)
    pool: list[str] = []
    with gzip.open(shared_data / "bench_instructions.jsonl.gz", "rt", encoding="utf-8") as lines:
        for n, line in enumerate(lines):
            text = json.loads(line)["instruction"]
            if (
                usable(text)
                and 6 <= len(text.split()) <= 40
                and not index.check_and_add(n, text).is_duplicate
            ):
                pool.append(text)
            if len(pool) == 45:
                break
    path = tmp_path_factory.mktemp("pool") / "pool.jsonl"
    path.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in pool), encoding="utf-8")
    with running_sim_server(
        pool=str(path), mutate_rate=0.5, latency="lognormal", median=0.5, sigma=0.5, seed=1
    ) as server:
        yield server


def _items(database_url: str) -> tuple[list[Item], dict[int, GenerationJob]]:
    engine = create_db_engine(database_url)
    with make_session_factory(engine)() as session:
        items = list(session.scalars(select(Item).order_by(Item.id)))
        jobs = {j.id: j for j in session.scalars(select(GenerationJob))}
    engine.dispose()
    return items, jobs


def _assert_no_near_duplicates_across_jobs(database_url: str) -> None:
    items, jobs = _items(database_url)
    assert len(jobs) == 2 and all(j.status == JobStatus.succeeded for j in jobs.values()), [
        (j.status, j.error) for j in jobs.values()
    ]
    first, second = sorted(jobs.values(), key=lambda j: j.id)
    assert first.started_at < second.finished_at and second.started_at < first.finished_at  # they overlapped
    accepted = [i for i in items if i.status == ItemStatus.pending]
    assert len(accepted) == first.accepted + second.accepted >= 2 * JOB["count"]
    tokens = {i.id: tokenize(i.instruction) for i in accepted}
    for a, b in itertools.combinations(accepted, 2):
        score = rouge_l_f1(tokens[a.id], tokens[b.id])
        assert score <= THRESHOLD, (
            f"accepted near-duplicates: {a.instruction!r} / {b.instruction!r} ({score:.2f})"
        )
    # The server really offered each job near-duplicates of the other's items, and the accept step caught them.
    by_id = {i.id: i for i in items}
    crossed = {
        (i.job_id, by_id[i.nearest_id].job_id)
        for i in items
        if i.filter_reason == "near_duplicate"
        and i.nearest_kind == "item"
        and by_id[i.nearest_id].job_id != i.job_id
    }
    assert crossed == {(first.id, second.id), (second.id, first.id)}


def _dataset(database_url: str) -> None:
    run_migrations(database_url)
    engine = create_db_engine(database_url)
    seeds = parse_seed_file((PROJECT_ROOT / "seeds" / "default.jsonl").read_bytes(), filename="default.jsonl")
    with transaction(make_session_factory(engine)) as session:
        import_seeds(session, create_dataset(session, "shared"), seeds, source="default.jsonl")
    engine.dispose()


def test_two_jobs_in_one_process_never_accept_near_duplicates_of_each_other(
    database_url: str, sim: SimServer
) -> None:
    _dataset(database_url)
    backends = {"sim": sim.backend_settings(max_in_flight=4).model_dump()}
    settings = make_settings(database_url, backends=backends, default_backend="sim", worker_concurrency=2)
    with running_service(settings) as client:
        ids = [client.post("/v1/datasets/1/generations", json=JOB).json()["id"] for _ in range(2)]
        for job_id in ids:
            wait_for_job(client, job_id, timeout=120)
    _assert_no_near_duplicates_across_jobs(database_url)


def test_two_processes_never_accept_near_duplicates_of_each_other(database_url: str, sim: SimServer) -> None:
    _dataset(database_url)
    backends = {"sim": json.loads(sim.backend_settings(max_in_flight=4).model_dump_json())}
    env = {**os.environ, "SPROUT_DATABASE_URL": database_url, "SPROUT_BACKENDS": json.dumps(backends)}
    command = [sys.executable, "-m", "app.cli", "generate", "--dataset", "shared", "--backend", "sim"]
    command += [
        "--count",
        str(JOB["count"]),
        "--max-prompts",
        str(JOB["max_prompts"]),
        "--tasks-per-prompt",
        "3",
    ]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
    _assert_no_near_duplicates_across_jobs(database_url)
