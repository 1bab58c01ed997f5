"""Benchmark of Sprout at fleet scale: the per-dataset accept step with 1, 2 and 4 worker processes, the queue's
claim rate, what the Prometheus metrics cost on the hot path, and one scrape. Everything runs side by side in
one run (the machine is shared and noisy): the figures to read are the ratios.

(a) Accept step, per dataset. One dataset on PostgreSQL, preloaded with the 35,516 bench instructions as items
    (as the generation ceiling is), with four queued jobs that never end by themselves. N = 1, 2, 4 real
    `sprout worker` processes (`--concurrency 1`: N workers run N jobs into the dataset at once, within the
    default limit of 4 per dataset) against a simulated server that answers at once with new tasks (the bench
    instructions, 60% of their words rewritten), so the model is not the bottleneck: what is left is each
    worker's pipeline and the dataset's accept step (index catch-up, dedup, insert, counters; one transaction
    at a time per dataset under its advisory lock). Each run starts from a copy of one template database, waits
    until every worker has accepted items (its index is built), warms up, then counts accepted items over a
    window from the jobs' counters (from the first accept step that lands in it to the last). Over the same
    window: the workers' own /metrics (`--metrics-port`: accept steps, their time, lock wait included, and
    their candidates), pg_locks four times a second (is the dataset's accept lock held, how many wait), CPU per
    process group. Runs alternate 1, 2, 4, 4, 2, 1, ...; medians per N.
(b) Claim rate. Trivial queued generation jobs spread over 32 datasets, claimed (`claim_next`, with the
    per-dataset limit as the worker passes it) and finished (`finish`), one transaction each, by 1, 2 and 4
    processes until none is left, on PostgreSQL and on SQLite, alternating; medians. `claims_per_s` is the
    PostgreSQL median with 4 processes (a fleet claiming at once). Beside it: the database's commit latency,
    and, as a diagnosis, the same PostgreSQL claims with commits that do not wait for the WAL flush.
(c) Metrics overhead. In this process, the hot-path metrics of app/ops/metrics.py (LLM request time and
    tokens, LLM errors, requests in flight, the accept step's time and verdicts) switch between real and no-ops
    in alternating phases (ABBA pairs) of two workloads against the simulated server: one long generation job
    (request, screen, accept; SQLite) and the LLM client alone. Per pair, time per request with over without,
    minus one; medians over the pairs, by this process's CPU time (`metrics_overhead`, the job) and by wall
    time. Checked: the no-op phases observed nothing, the real ones every request. Beside it, the cost per call
    of each metric operation times the calls per request, over the CPU per request.
(d) Scrape: GET /metrics (the process's registry and the fleet figures read from the database) on the
    dataset (a) left, with 2,000 finished jobs added.

Usage (from the repository root; PostgreSQL as in the tests, SPROUT_TEST_POSTGRES_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres; the bench creates and drops its own databases,
sprout_scale_bench and sprout_scale_bench_template):
    .venv/bin/python bench/scale_bench.py [--rounds 2] [--window 12] [--only accept|scrape|claims|overhead ...]
Writes bench/results/scale.json (sections run alone merge into it) and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import gzip
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psutil  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from sqlalchemy import create_engine, delete, func, insert, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.core.config import BackendSettings, Settings  # noqa: E402
from app.core.db import create_db_engine, make_session_factory, run_migrations, transaction  # noqa: E402
from app.datasets.seed_formats import parse_seed_file  # noqa: E402
from app.datasets.service import create_dataset, import_seeds  # noqa: E402
from app.generation.models import GenerationJob, Item  # noqa: E402
from app.generation.params import GenerationParams  # noqa: E402
from app.generation.service import queue_job  # noqa: E402
from app.jobs.models import JobStatus  # noqa: E402
from app.jobs.queue import claim_next, finish  # noqa: E402
from app.llm.registry import BackendRegistry  # noqa: E402

DATA = Path(os.environ.get("SPROUT_SHARED_DATA", REPO.parent / "shared" / "data"))
BENCH_INSTRUCTIONS = DATA / "bench_instructions.jsonl.gz"
SEEDS = REPO / "seeds" / "default.jsonl"
OUT = REPO / "bench" / "results" / "scale.json"
ADMIN_URL = os.environ.get(
    "SPROUT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
WORK_DB = "sprout_scale_bench"
TEMPLATE_DB = "sprout_scale_bench_template"
BACKEND = "sim"
WORKER_COUNTS = (1, 2, 4)
DATASET_NAME = "scale"
TARGETS = {"accept_ratio_4_1": 0.8, "claims_per_s": 200.0, "metrics_overhead": 0.02}


# --- databases -----------------------------------------------------------------------------------------------


def _admin() -> Any:
    return create_engine(
        make_url(ADMIN_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


def pg_url(name: str) -> str:
    return make_url(ADMIN_URL).set(drivername="postgresql+psycopg", database=name).render_as_string(False)


def recreate_database(name: str, template: str | None = None) -> str:
    """Drop `name` (closing its connections) and create it again, empty or as a copy of `template`."""
    admin = _admin()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    finally:
        admin.dispose()
    return pg_url(name)


def drop_database(name: str) -> None:
    admin = _admin()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def bench_settings(database_url: str, base_url: str = "http://127.0.0.1:9/v1") -> Settings:
    backend = BackendSettings(kind="openai", base_url=base_url, model="sim")
    return Settings(
        _env_file=None, database_url=database_url, backends={BACKEND: backend}, default_backend=BACKEND
    )  # type: ignore[call-arg]


def load_instructions() -> list[str]:
    with gzip.open(BENCH_INSTRUCTIONS, "rt", encoding="utf-8") as lines:
        return [json.loads(line)["instruction"] for line in lines]


def new_dataset(sessions: Any, name: str, preload: list[str] | None = None) -> int:
    """A dataset with the default seeds and, optionally, `preload` as pending items."""
    with transaction(sessions) as session:
        dataset = create_dataset(session, name)
        import_seeds(
            session, dataset, parse_seed_file(SEEDS.read_bytes(), filename=SEEDS.name), source=SEEDS.name
        )
        dataset_id = dataset.id
    for start in range(0, len(preload or []), 5000):
        rows = [
            {
                "dataset_id": dataset_id,
                "instruction": t,
                "input": "",
                "output": "-",
                "status": "pending",
                "model": "preload",
                "filter_reason": None,
                "duplicate_signal": None,
            }
            for t in (preload or [])[start : start + 5000]
        ]
        with transaction(sessions) as session:
            session.execute(insert(Item.__table__), rows)
    return dataset_id


# --- (a) the accept step with 1, 2 and 4 worker processes ----------------------------------------------------


def build_template(jobs: int) -> dict[str, Any]:
    """The accept runs' starting point: a migrated database with one dataset (default seeds + the bench
    instructions as items) and `jobs` queued jobs that only a stop ends. Each run copies it."""
    drop_database(WORK_DB)
    url = recreate_database(TEMPLATE_DB)
    run_migrations(url)
    engine = create_db_engine(url)
    sessions = make_session_factory(engine)
    settings = bench_settings(url)
    registry = BackendRegistry(settings.backends)
    preload = load_instructions()
    dataset_id = new_dataset(sessions, DATASET_NAME, preload)
    params = GenerationParams(count=1_000_000, max_prompts=10_000_000, max_errors=1_000_000)
    with transaction(sessions) as session:
        job_ids = [queue_job(session, dataset_id, params, settings, registry).id for _ in range(jobs)]
    engine.dispose()
    vacuum = create_engine(url, isolation_level="AUTOCOMMIT")
    with vacuum.connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))  # as autovacuum would after a bulk load
    vacuum.dispose()
    return {"dataset_id": dataset_id, "job_ids": job_ids, "preloaded_items": len(preload)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_worker(url: str, base_url: str, port: int, workdir: Path, number: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "SPROUT_DATABASE_URL": url,
        "SPROUT_BACKENDS": json.dumps({BACKEND: {"kind": "openai", "base_url": base_url, "model": "sim"}}),
        "SPROUT_DEFAULT_BACKEND": BACKEND,
    }
    cmd = [
        sys.executable,
        "-m",
        "app.cli",
        "worker",
        "--concurrency",
        "1",
        "--trainings",
        "0",
        "--no-schedules",
        "--metrics-port",
        str(port),
        "--log-format",
        "json",
    ]
    log = (workdir / f"worker-{number}.log").open("wb")
    try:
        return subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    finally:
        log.close()


def scrape(port: int) -> dict[str, float]:
    """The figures of one worker's /metrics this bench reads, summed over label values."""
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in (
                "sprout_accept_step_seconds_sum",
                "sprout_accept_step_seconds_count",
                "sprout_llm_request_seconds_count",
            ):
                figures[sample.name] = figures.get(sample.name, 0.0) + sample.value
            elif sample.name == "sprout_accept_candidates_total":
                key = f"candidates_{sample.labels.get('verdict')}"
                figures[key] = figures.get(key, 0.0) + sample.value
    return figures


def counters(engine: Any, dataset_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        row = conn.execute(
            select(
                func.coalesce(func.sum(GenerationJob.accepted), 0),
                func.coalesce(func.sum(GenerationJob.duplicates), 0),
                func.coalesce(func.sum(GenerationJob.parsed), 0),
                func.coalesce(func.sum(GenerationJob.requests), 0),
                func.coalesce(func.sum(GenerationJob.errors), 0),
                func.count().filter(GenerationJob.status == JobStatus.running),
                func.count().filter(GenerationJob.status == JobStatus.running, GenerationJob.accepted > 0),
            ).where(GenerationJob.dataset_id == dataset_id)
        ).one()
    keys = ("accepted", "duplicates", "parsed", "requests", "errors", "running", "running_accepting")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def cpu_seconds(pids: list[int], *, children: bool = False) -> float:
    """User + system CPU of these processes (and, with `children`, of their live descendants)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            group = [proc, *(proc.children(recursive=True) if children else [])]
            for p in group:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
    return total


class LockSampler(threading.Thread):
    """Four times a second, from pg_locks: whether a transaction holds the dataset's accept lock (the advisory
    lock of app/generation/pipeline/accept.py) and how many wait for it."""

    def __init__(self, engine: Any, dataset_id: int) -> None:
        super().__init__(daemon=True)
        self._engine = engine
        self._dataset_id = dataset_id
        self._halt = threading.Event()
        self.held: list[int] = []
        self.waiting: list[int] = []

    def run(self) -> None:
        from app.generation.pipeline.accept import ACCEPT_LOCK

        # pg_advisory_xact_lock(key1, key2): locktype advisory, classid = key1, objid = key2, objsubid = 2.
        query = text(
            "SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted) FROM pg_locks "
            "WHERE locktype = 'advisory' AND objsubid = 2 AND classid = :ns AND objid = :key "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        with self._engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            while not self._halt.wait(0.25):
                held, waiting = conn.execute(query, {"ns": ACCEPT_LOCK, "key": self._dataset_id}).one()
                self.held.append(int(held))
                self.waiting.append(int(waiting))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def stop_all(processes: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> dict[str, Any]:
    """SIGTERM every process we started at once, SIGKILL any still there after `timeout` (30 s, Kubernetes'
    default grace period; the run's database is thrown away). A worker first finishes the accept step it is in
    or waiting for (behind the other workers' turns at the dataset's lock), then hands its job back. Returns
    their exit codes and when the last one was gone."""
    started = time.monotonic()
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    pending = list(processes)
    while pending and time.monotonic() - started < timeout:
        pending = [p for p in pending if p.poll() is None]
        time.sleep(0.05)
    last_gone = time.monotonic() - started
    for process in pending:
        process.kill()
        process.wait(timeout=10)
    return {"exit_codes": [p.returncode for p in processes], "all_gone_s": round(last_gone, 1)}


def step_rate(timeline: list[tuple[float, int]]) -> float | None:
    """Items per second between the first and the last change of the count (None with fewer than two)."""
    moves = timeline[1:]
    if len(moves) < 2:
        return None
    (t_first, first), (t_last, last) = moves[0], moves[-1]
    return round((last - first) / (t_last - t_first), 1) if t_last > t_first else None


def accept_run(n: int, sim: Any, template: dict[str, Any], warmup: float, window: float) -> dict[str, Any]:
    url = recreate_database(WORK_DB, TEMPLATE_DB)
    engine = create_engine(url, pool_size=2)
    dataset_id = template["dataset_id"]
    workers: list[subprocess.Popen[bytes]] = []
    ports = [free_port() for _ in range(n)]
    workdir = Path(tempfile.mkdtemp(prefix="sprout-scale-"))
    started = time.monotonic()
    try:
        for i, port in enumerate(ports):
            workers.append(start_worker(url, sim.base_url, port, workdir, i))
        # Every worker holds a job and has accepted items (its index is built): from here on it is steady.
        while counters(engine, dataset_id)["running_accepting"] < n:
            if time.monotonic() - started > 300:
                raise RuntimeError(f"{n} workers did not all start accepting within 300 s: see {workdir}")
            for worker in workers:
                if worker.poll() is not None:
                    raise RuntimeError(f"a worker exited with {worker.returncode}: see {workdir}")
            time.sleep(0.5)
        ready_s = time.monotonic() - started
        time.sleep(warmup)
        with engine.connect() as conn:
            backend_pids = list(
                conn.scalars(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            )
        worker_pids = [w.pid for w in workers]
        sampler = LockSampler(engine, dataset_id)
        sampler.start()
        before = counters(engine, dataset_id)
        metrics_before = [scrape(p) for p in ports]
        cpu_before = (
            cpu_seconds(worker_pids, children=True),
            cpu_seconds([sim.pid]),
            cpu_seconds(backend_pids),
            psutil.cpu_times(),
        )
        t0 = time.monotonic()
        # Accepted items jump once per accept step: sample often, keep the moments they moved.
        timeline = [(0.0, before["accepted"])]
        while (elapsed := time.monotonic() - t0) < window:
            time.sleep(min(0.2, window - elapsed))
            accepted = counters(engine, dataset_id)["accepted"]
            if accepted != timeline[-1][1]:
                timeline.append((round(time.monotonic() - t0, 2), accepted))
        after = counters(engine, dataset_id)
        t1 = time.monotonic()
        metrics_after = [scrape(p) for p in ports]
        cpu_after = (
            cpu_seconds(worker_pids, children=True),
            cpu_seconds([sim.pid]),
            cpu_seconds(backend_pids),
            psutil.cpu_times(),
        )
        sampler.stop()
    finally:
        stops = stop_all(workers)
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                select(GenerationJob.status, func.count())
                .where(GenerationJob.dataset_id == dataset_id)
                .group_by(GenerationJob.status)
            ).all()
        )
        items = conn.scalar(select(func.count()).select_from(Item).where(Item.dataset_id == dataset_id))
    engine.dispose()
    span = t1 - t0

    def delta(key: str) -> float:
        return sum(
            a.get(key, 0.0) - b.get(key, 0.0) for a, b in zip(metrics_after, metrics_before, strict=True)
        )

    steps = delta("sprout_accept_step_seconds_count")
    step_seconds = delta("sprout_accept_step_seconds_sum")
    candidates = delta("candidates_accepted") + delta("candidates_duplicate") + delta("candidates_filtered")
    machine_busy = (
        sum(
            getattr(cpu_after[3], f) - getattr(cpu_before[3], f)
            for f in ("user", "system", "nice", "irq", "softirq")
        )
        / span
    )
    items_per_s = step_rate(timeline) or round((after["accepted"] - before["accepted"]) / span, 1)
    result = {
        "workers": n,
        "window_s": round(span, 2),
        "ready_after_s": round(ready_s, 1),
        # From the first step that landed in the window to the last one: whole steps only (a window of a few
        # steps would otherwise count one more or one less by chance).
        "items_per_s": items_per_s,
        "items_per_s_window": round((after["accepted"] - before["accepted"]) / span, 1),
        # Candidates (every parsed item: accepted, duplicate or filtered) at the same step-aligned rate.
        "candidates_per_s": round(
            items_per_s
            * (after["parsed"] - before["parsed"])
            / max(1, after["accepted"] - before["accepted"]),
            1,
        ),
        "requests_per_s": round((after["requests"] - before["requests"]) / span, 1),
        "duplicates_per_s": round((after["duplicates"] - before["duplicates"]) / span, 1),
        "accept_steps_per_s": round(steps / span, 2),
        "db_connections": len(backend_pids),
        "accept_step_mean_ms": round(1000 * step_seconds / steps, 1) if steps else None,
        "candidates_per_step": round(candidates / steps, 1) if steps else None,
        # Sum of the workers' accept-step time over the window: above 1.0, steps overlap (waiting on the lock).
        "accept_step_busy": round(step_seconds / span, 3),
        # Share of the samples in which a transaction held the dataset's accept lock, and the mean number waiting.
        "accept_lock_held": round(statistics.fmean(sampler.held), 3) if sampler.held else None,
        "accept_lock_waiting": round(statistics.fmean(sampler.waiting), 3) if sampler.waiting else None,
        # The dataset's serialized time per accept step: the share of the window its lock was held, per step.
        "lock_held_ms_per_step": round(1000 * statistics.fmean(sampler.held) * span / steps, 1)
        if steps and sampler.held
        else None,
        "cpu_cores_workers": round((cpu_after[0] - cpu_before[0]) / span, 3),
        "cpu_cores_sim_server": round((cpu_after[1] - cpu_before[1]) / span, 3),
        "cpu_cores_postgres": round((cpu_after[2] - cpu_before[2]) / span, 3),
        "cpu_cores_machine": round(machine_busy, 3),
        # Accepted items per CPU second of everything this run started (workers and their index processes, the
        # simulated server, the database's backends for this database): what the work costs, whatever share of
        # a busy machine it got.
        "items_per_cpu_s": round(
            (after["accepted"] - before["accepted"])
            / max(1e-9, sum(cpu_after[i] - cpu_before[i] for i in range(3))),
            1,
        ),
        "errors_in_window": after["errors"] - before["errors"],
        "timeline": timeline,
        "job_statuses_after_stop": {str(getattr(k, "value", k)): v for k, v in statuses.items()},
        "items_in_dataset_after": items,
        "worker_exit_codes": stops["exit_codes"],
        "workers_stopped_s": stops["all_gone_s"],
        "run_s": round(time.monotonic() - started, 1),
    }
    if any(code not in (0, -signal.SIGKILL) for code in stops["exit_codes"]):
        print(f"  warning: workers stopped with {stops}; their logs: {workdir}", flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def accept_section(rounds: int, warmup: float, window: float) -> dict[str, Any]:
    from tests.support.sim_server import running_sim_server

    template = build_template(max(WORKER_COUNTS))
    print(f"  template: {template['preloaded_items']} items, jobs {template['job_ids']}", flush=True)
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in WORKER_COUNTS}
    with running_sim_server(pool=str(BENCH_INSTRUCTIONS), rewrite_rate=0.6, latency="zero", seed=3) as sim:
        for round_no in range(rounds):
            order = WORKER_COUNTS if round_no % 2 == 0 else tuple(reversed(WORKER_COUNTS))
            for n in order:
                run = accept_run(n, sim, template, warmup, window)
                runs[n].append(run)
                print(
                    f"  {n} worker(s): {run['items_per_s']:.0f} items/s, {run['accept_steps_per_s']:.1f} steps/s "
                    f"of {run['accept_step_mean_ms']} ms, {run['candidates_per_step']} candidates each, "
                    f"lock held {run['accept_lock_held']}, waiting {run['accept_lock_waiting']}, "
                    f"machine {run['cpu_cores_machine']:.2f} "
                    f"cores ({run['run_s']:.0f} s)",
                    flush=True,
                )
    result: dict[str, Any] = {"preloaded_items": template["preloaded_items"], "warmup_s": warmup}
    for n in WORKER_COUNTS:
        for key in (
            "items_per_s",
            "candidates_per_s",
            "accept_step_mean_ms",
            "lock_held_ms_per_step",
            "candidates_per_step",
            "accept_lock_held",
            "accept_lock_waiting",
            "items_per_cpu_s",
            "cpu_cores_machine",
            "db_connections",
            "workers_stopped_s",
        ):
            result[f"{key}_{n}"] = statistics.median(r[key] for r in runs[n])
        result[f"runs_{n}"] = runs[n]
    for key in ("items_per_s", "items_per_cpu_s"):
        for n in WORKER_COUNTS[1:]:
            result[f"{key}_ratio_{n}_1"] = round(result[f"{key}_{n}"] / result[f"{key}_1"], 3)
    result["ratio_2_1"] = result["items_per_s_ratio_2_1"]
    result["ratio_4_1"] = result["items_per_s_ratio_4_1"]
    return result


# --- (b) the queue's claim rate --------------------------------------------------------------------------------


def _claimer(url: str, worker: str, limit: int, go: Any, results: Any, async_commit: bool = False) -> None:
    """A child process: claim and finish jobs, one transaction each, until none is queued. With `async_commit`
    (a diagnosis, PostgreSQL only) its commits do not wait for the WAL flush."""
    from sqlalchemy import event

    engine = create_db_engine(url)
    if async_commit:

        @event.listens_for(engine, "connect")
        def _no_flush_wait(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.autocommit = True
            dbapi_connection.execute("SET synchronous_commit TO off")
            dbapi_connection.autocommit = False

    sessions = make_session_factory(engine)
    with sessions() as session:  # connect and warm up before the start
        session.scalar(select(func.count()).select_from(GenerationJob))
    results.put("ready")
    go.wait()
    latencies: list[float] = []
    empty = 0
    first = time.time()
    while True:
        started = time.perf_counter()
        with transaction(sessions) as session:
            claim = claim_next(session, GenerationJob, worker, 60.0, per_dataset_limit=limit)
        if claim is None:
            with sessions() as session:
                left = session.scalar(
                    select(func.count())
                    .select_from(GenerationJob)
                    .where(GenerationJob.status == JobStatus.queued)
                )
            if not left:
                break
            empty += 1
            continue
        with transaction(sessions) as session:
            finish(session, GenerationJob, claim, JobStatus.succeeded)
        latencies.append(time.perf_counter() - started)
    last = time.time()
    engine.dispose()
    results.put(
        {
            "worker": worker,
            "done": len(latencies),
            "empty": empty,
            "first": first,
            "last": last,
            "latencies": latencies,
        }
    )


def claim_run(
    url: str, dataset_ids: list[int], jobs: int, processes: int, limit: int, *, async_commit: bool = False
) -> dict[str, Any]:
    engine = create_db_engine(url)
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:
        session.execute(delete(GenerationJob))
        session.execute(
            insert(GenerationJob.__table__),
            [
                {
                    "dataset_id": dataset_ids[i % len(dataset_ids)],
                    "params": {"count": 1, "backend": BACKEND},
                    "backend": BACKEND,
                    "seed": i,
                    "status": "queued",
                    "requested": 1,
                    "filtered": {},
                }
                for i in range(jobs)
            ],
        )
    engine.dispose()
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    results = context.Queue()
    children = [
        context.Process(target=_claimer, args=(url, f"claimer-{i}", limit, go, results, async_commit))
        for i in range(processes)
    ]
    for child in children:
        child.start()
    for _ in children:  # each imports the app and connects before the start
        if results.get(timeout=120) != "ready":
            raise RuntimeError("a claimer did not start")
    go.set()
    got = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join(timeout=30)
    done = sum(r["done"] for r in got)
    span = max(r["last"] for r in got) - min(r["first"] for r in got)
    latencies = sorted(x for r in got for x in r["latencies"])
    engine = create_db_engine(url)
    with engine.connect() as conn:
        finished = conn.scalar(
            select(func.count()).select_from(GenerationJob).where(GenerationJob.status == JobStatus.succeeded)
        )
    engine.dispose()
    if done != jobs or finished != jobs:
        raise RuntimeError(f"claimed {done}, finished {finished}, of {jobs} jobs")
    return {
        "processes": processes,
        "jobs": jobs,
        "seconds": round(span, 3),
        "claims_per_s": round(jobs / span, 1),
        "claim_finish_p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
        "claim_finish_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2),
        "empty_claims": sum(r["empty"] for r in got),
    }


def commit_ms(url: str, commits: int = 200) -> float:
    """Median time of one single-row INSERT + COMMIT on the app's engine: the database's write latency (on
    PostgreSQL its WAL flush; SQLite runs WAL with synchronous=NORMAL, which does not flush per commit)."""
    engine = create_db_engine(url)
    times = []
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS bench_commit_probe (x integer)"))
        conn.commit()
        for _ in range(commits):
            started = time.perf_counter()
            conn.execute(text("INSERT INTO bench_commit_probe VALUES (1)"))
            conn.commit()
            times.append(time.perf_counter() - started)
        conn.execute(text("DROP TABLE bench_commit_probe"))
        conn.commit()
    engine.dispose()
    return round(1000 * statistics.median(times), 3)


def claims_section(jobs: int, datasets: int, rounds: int) -> dict[str, Any]:
    limit = Settings(_env_file=None).dataset_max_running_jobs  # type: ignore[call-arg]
    result: dict[str, Any] = {
        "jobs_per_run": jobs,
        "datasets": datasets,
        "per_dataset_limit": limit,
        "rounds": rounds,
    }
    with tempfile.TemporaryDirectory(prefix="sprout-scale-") as directory:
        for database in ("postgres", "sqlite"):
            if database == "postgres":
                url = recreate_database(WORK_DB)
            else:
                url = f"sqlite:///{directory}/claims.db"
            run_migrations(url)
            result[f"{database}_commit_ms"] = commit_ms(url)
            engine = create_db_engine(url)
            sessions = make_session_factory(engine)
            ids = []
            with transaction(sessions) as session:
                for i in range(datasets):
                    ids.append(create_dataset(session, f"claims-{i}").id)
            engine.dispose()
            runs: dict[int, list[dict[str, Any]]] = {n: [] for n in WORKER_COUNTS}
            for round_no in range(rounds):
                order = WORKER_COUNTS if round_no % 2 == 0 else tuple(reversed(WORKER_COUNTS))
                for processes in order:
                    run = claim_run(url, ids, jobs, processes, limit)
                    runs[processes].append(run)
                    print(
                        f"  {database} {processes} claimer(s): {run['claims_per_s']:.0f} claims/s "
                        f"(p50 {run['claim_finish_p50_ms']} ms, p99 {run['claim_finish_p99_ms']} ms)",
                        flush=True,
                    )
            result[database] = {
                f"claims_per_s_{n}": statistics.median(r["claims_per_s"] for r in runs[n])
                for n in WORKER_COUNTS
            }
            result[database]["runs"] = runs
            if database == "postgres":
                # Diagnosis, not the figure: the same claims with commits that do not wait for the disk, to show
                # how much of a claim is the WAL flush (two per claim) on this machine.
                diagnosis = {n: claim_run(url, ids, jobs, n, limit, async_commit=True) for n in WORKER_COUNTS}
                for n, run in diagnosis.items():
                    print(
                        f"  postgres {n} claimer(s), commits not waiting for the flush: {run['claims_per_s']:.0f}/s"
                    )
                result["postgres_async_commit"] = {
                    f"claims_per_s_{n}": run["claims_per_s"] for n, run in diagnosis.items()
                }
    # The queue's claim rate: with four processes claiming at once, as a fleet does (one claimer alone measures
    # its own latency, reported beside it).
    result["claims_per_s"] = result["postgres"]["claims_per_s_4"]
    result["claims_per_s_sqlite"] = result["sqlite"]["claims_per_s_4"]
    return result


# --- (c) the metrics' cost ------------------------------------------------------------------------------------

# What a no-op stands in for, by name in app/ops/metrics.py: the hot path's metrics only.
HOT_FUNCTIONS = ("observe_llm_request", "count_llm_error")
HOT_OBJECTS = (
    "LLM_REQUEST_SECONDS",
    "LLM_TOKENS",
    "LLM_ERRORS",
    "LLM_IN_FLIGHT",
    "ACCEPT_SECONDS",
    "ACCEPT_CANDIDATES",
)


class _NoMetric:
    """Takes any labels and any observation, and does nothing."""

    def labels(self, *args: Any, **kwargs: Any) -> _NoMetric:
        return self

    def observe(self, *args: Any, **kwargs: Any) -> None:
        pass

    def inc(self, *args: Any, **kwargs: Any) -> None:
        pass

    def dec(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set(self, *args: Any, **kwargs: Any) -> None:
        pass


def _noop(*args: Any, **kwargs: Any) -> None:
    pass


class MetricsSwitch:
    """Turns the hot path's metrics into no-ops, and back, wherever the app's loaded modules hold them (by
    reference, or through the metrics module), in this process only. Each name is looked up when it is called,
    so a switch takes effect at the next call, also in a job that is running."""

    def __init__(self) -> None:
        from app.ops import metrics

        real = {
            name: getattr(metrics, name) for name in (*HOT_FUNCTIONS, *HOT_OBJECTS) if hasattr(metrics, name)
        }
        by_id = {id(obj): name for name, obj in real.items()}
        stand_in = types.SimpleNamespace(
            **{k: getattr(metrics, k) for k in dir(metrics) if not k.startswith("__")}
        )
        for name in real:
            setattr(stand_in, name, _noop if name in HOT_FUNCTIONS else _NoMetric())
        self._swaps: list[tuple[Any, str, Any, Any]] = []  # module, attribute, real value, no-op
        for module_name, module in list(sys.modules.items()):
            if not module_name.startswith("app.") or module is metrics or module is None:
                continue
            for attr, value in list(vars(module).items()):
                if value is metrics and isinstance(value, types.ModuleType) and attr == "metrics":
                    if module_name != "app.ops":  # the package's own submodule attribute: not a use
                        self._swaps.append((module, attr, value, stand_in))
                elif id(value) in by_id and value is real[by_id[id(value)]]:
                    self._swaps.append((module, attr, value, getattr(stand_in, by_id[id(value)])))
        self.replaced = sorted(f"{m.__name__}.{a}" for m, a, _, _ in self._swaps)

    def off(self) -> None:
        for module, attr, _, noop in self._swaps:
            setattr(module, attr, noop)

    def on(self) -> None:
        for module, attr, real, _ in self._swaps:
            setattr(module, attr, real)


def _observed() -> tuple[float, float]:
    """LLM requests and accept steps the real metrics have seen in this process."""
    from app.ops import metrics

    requests = steps = 0.0
    for family in metrics.process_registry().collect():
        for sample in family.samples:
            if sample.name == "sprout_llm_request_seconds_count":
                requests += sample.value
            elif sample.name == "sprout_accept_step_seconds_count":
                steps += sample.value
    return requests, steps


class Phases:
    """Alternating phases, metrics on and off, in the order on/off, off/on, on/off, ... (so a trend over the run
    favours neither side); each phase's wall time, this process's CPU time and its amount of work."""

    def __init__(self, switch: MetricsSwitch) -> None:
        self._switch = switch
        self.done: list[dict[str, Any]] = []
        self._mark: tuple[float, float, float, tuple[float, float]] | None = None
        self._side = "with"

    def side_of(self, number: int) -> str:
        pair, second = divmod(number, 2)
        first = "with" if pair % 2 == 0 else "without"
        return first if not second else ("without" if first == "with" else "with")

    def start(self, work: float) -> None:
        gc.collect()  # every phase starts with the collector's young generations empty (not timed)
        self._side = self.side_of(len(self.done))
        (self._switch.on if self._side == "with" else self._switch.off)()
        self._mark = (time.perf_counter(), time.process_time(), work, _observed())

    def end(self, work: float) -> None:
        assert self._mark is not None
        wall0, cpu0, work0, seen0 = self._mark
        seen = _observed()
        self.done.append(
            {
                "side": self._side,
                "wall_s": time.perf_counter() - wall0,
                "cpu_s": time.process_time() - cpu0,
                "work": work - work0,
                "observed_requests": seen[0] - seen0[0],
                "observed_accept_steps": seen[1] - seen0[1],
            }
        )

    def summary(self) -> dict[str, Any]:
        """Per adjacent pair: the time per unit of work with over without, minus one; medians over the pairs."""
        self._switch.on()
        pairs = [self.done[i : i + 2] for i in range(0, len(self.done) - 1, 2)]
        wall, cpu = [], []
        for pair in pairs:
            by = {p["side"]: p for p in pair}
            if by["with"]["work"] <= 0 or by["without"]["work"] <= 0:
                continue
            wall.append(
                (by["with"]["wall_s"] / by["with"]["work"])
                / (by["without"]["wall_s"] / by["without"]["work"])
                - 1
            )
            cpu.append(
                (by["with"]["cpu_s"] / by["with"]["work"]) / (by["without"]["cpu_s"] / by["without"]["work"])
                - 1
            )
        # The comparison is real only if the no-op phases observed nothing and the others did.
        off_seen = sum(
            p["observed_requests"] + p["observed_accept_steps"] for p in self.done if p["side"] == "without"
        )
        on_seen = sum(p["observed_requests"] for p in self.done if p["side"] == "with")
        if off_seen or not on_seen:
            raise RuntimeError(f"metrics observed {off_seen} in no-op phases and {on_seen} in real ones")

        def totals(side: str) -> dict[str, float]:
            phases = [p for p in self.done if p["side"] == side]
            work = sum(p["work"] for p in phases)
            return {
                "work": work,
                "wall_s_per_work_ms": round(1000 * sum(p["wall_s"] for p in phases) / work, 4),
                "cpu_s_per_work_ms": round(1000 * sum(p["cpu_s"] for p in phases) / work, 4),
            }

        return {
            "pairs": len(wall),
            "overhead_wall": round(statistics.median(wall), 4),
            "overhead_cpu": round(statistics.median(cpu), 4),
            "overhead_wall_quartiles": [round(q, 4) for q in statistics.quantiles(wall, n=4)],
            "overhead_cpu_quartiles": [round(q, 4) for q in statistics.quantiles(cpu, n=4)],
            "with": totals("with"),
            "without": totals("without"),
            "observed_requests": on_seen,
            "observed_accept_steps": sum(
                p["observed_accept_steps"] for p in self.done if p["side"] == "with"
            ),
            "replaced": self._switch.replaced,
        }


def job_interleaved(
    switch: MetricsSwitch, template_db: Path, base_url: str, phases: int, phase_requests: int
) -> dict[str, Any]:
    """One long generation job in this process (as `sprout generate` runs it: request, screen, accept), on a copy
    of a prepared SQLite file; the metrics switch on or off at the first accept step after `phase_requests`
    more requests were stored. Work: the requests the job stored."""
    from app.generation.pipeline.runner import GenerationRunner
    from app.jobs.queue import request_cancel

    record = Phases(switch)
    with tempfile.TemporaryDirectory(prefix="sprout-scale-") as directory:
        path = Path(directory) / "job.db"
        shutil.copyfile(template_db, path)
        url = f"sqlite:///{path}"
        engine = create_db_engine(url)
        sessions = make_session_factory(engine)
        settings = bench_settings(url, base_url)
        registry = BackendRegistry(settings.backends)
        params = GenerationParams(count=1_000_000, max_prompts=10_000_000, max_errors=1_000_000)
        with transaction(sessions) as session:
            dataset_id = session.scalar(select(func.min(Item.dataset_id))) or 1
            job_id = queue_job(session, dataset_id, params, settings, registry).id
        with transaction(sessions) as session:
            claim = claim_next(session, GenerationJob, "bench", 300, job_id=job_id)
        state: dict[str, Any] = {"phase_start": None, "stopping": False}

        def progress(counters: dict[str, Any]) -> None:
            requests = float(counters["requests"])
            if state["stopping"]:
                return
            if state["phase_start"] is None:  # the first requests fill the pipeline: not counted
                if requests >= phase_requests:
                    state["phase_start"] = requests
                    record.start(requests)
                return
            if requests - state["phase_start"] < phase_requests:
                return
            record.end(requests)
            if len(record.done) < phases:
                state["phase_start"] = requests
                record.start(requests)
            else:
                state["stopping"] = True
                with transaction(sessions) as session:
                    request_cancel(session, GenerationJob, job_id)

        async def go() -> None:
            try:
                runner = GenerationRunner(sessions, settings, registry)
                await runner.run(claim, on_progress=progress)  # type: ignore[arg-type]
            finally:
                await registry.aclose()

        asyncio.run(go())
        with sessions() as session:
            job = session.get(GenerationJob, job_id)
            figures = {"status": job.status.value, "requests": job.requests, "accepted": job.accepted}
        engine.dispose()
    if len(record.done) < phases or figures["status"] != "cancelled":
        raise RuntimeError(f"the overhead job ended early: {figures}, {len(record.done)} phases")
    return {**record.summary(), "job": figures, "phases": record.done}


def client_interleaved(switch: MetricsSwitch, base_url: str, phases: int, requests: int) -> dict[str, Any]:
    """The LLM client alone: blocks of `requests` chat requests (64 in flight) through the backend, the metrics
    on or off per block. Work: requests."""
    from app.llm.base import ChatMessage, SamplingParams

    settings = bench_settings("sqlite://", base_url)
    registry = BackendRegistry(settings.backends)
    record = Phases(switch)
    messages = [ChatMessage("user", "Come up with five new, diverse tasks. Answer as JSON.")]
    schema = {
        "type": "object",
        "properties": {"tasks": {"type": "array", "maxItems": 5, "items": {"type": "object"}}},
    }

    async def go() -> None:
        backend = await registry.get(BACKEND)
        semaphore = asyncio.Semaphore(backend.info.max_in_flight)

        async def one() -> None:
            async with semaphore:
                await backend.chat(messages, SamplingParams(), json_schema=schema)

        try:
            await asyncio.gather(*(one() for _ in range(requests)))  # warm-up
            done = 0
            for _ in range(phases):
                record.start(done)
                await asyncio.gather(*(one() for _ in range(requests)))
                done += requests
                record.end(done)
        finally:
            await registry.aclose()

    asyncio.run(go())
    return {**record.summary(), "phases": record.done}


def per_call_costs(calls: int = 100_000) -> dict[str, float]:
    """Nanoseconds per call of each hot-path metric operation, as the code calls them (best of three)."""
    from app.ops import metrics

    def timed(fn: Callable[[], None]) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, time.perf_counter() - started)
        return round(best / calls * 1e9, 1)

    def in_flight() -> None:
        gauge = metrics.LLM_IN_FLIGHT.labels("bench-cost", "127.0.0.1:1")
        gauge.inc()
        gauge.dec()

    def accept() -> None:
        metrics.ACCEPT_SECONDS.observe(0.05)
        metrics.ACCEPT_CANDIDATES.labels("accepted").inc(40)
        metrics.ACCEPT_CANDIDATES.labels("duplicate").inc(8)
        metrics.ACCEPT_CANDIDATES.labels("filtered").inc(2)

    costs = {
        "observe_llm_request_ns": timed(
            lambda: metrics.observe_llm_request("bench-cost", "127.0.0.1:1", 0.4, 900, 300)
        ),
        "in_flight_inc_dec_ns": timed(in_flight),
        "count_llm_error_ns": timed(lambda: metrics.count_llm_error("bench-cost", "127.0.0.1:1", "http_5xx")),
        "accept_step_observations_ns": timed(accept),
    }
    costs["per_request_ns"] = costs["observe_llm_request_ns"] + costs["in_flight_inc_dec_ns"]
    return costs


def overhead_section(job_phases: int, phase_requests: int, client_phases: int, block: int) -> dict[str, Any]:
    from tests.support.sim_server import running_sim_server

    result: dict[str, Any] = {
        "method": "alternating phases within one run, metrics real or no-ops (ABBA pairs); per pair: time per "
        "request with / without - 1; medians over the pairs",
    }
    with tempfile.TemporaryDirectory(prefix="sprout-scale-") as directory:
        template_db = Path(directory) / "template.db"
        url = f"sqlite:///{template_db}"
        run_migrations(url)
        engine = create_db_engine(url)
        new_dataset(make_session_factory(engine), DATASET_NAME, load_instructions()[:5000])
        engine.dispose()
        with running_sim_server(
            pool=str(BENCH_INSTRUCTIONS), rewrite_rate=0.6, latency="zero", seed=5
        ) as sim:
            import app.generation.pipeline.runner  # noqa: F401 (load every module that holds a metric first)
            import app.llm.openai_compat  # noqa: F401

            switch = MetricsSwitch()
            # Everything loaded so far lives for the whole run: out of the collector's way, so that a full
            # collection (which would otherwise walk the app's modules) does not land in one phase at random.
            gc.collect()
            gc.freeze()
            result["job"] = job_interleaved(switch, template_db, sim.base_url, job_phases, phase_requests)
            print(
                f"  job: {result['job']['pairs']} pairs, overhead {result['job']['overhead_wall']:+.4f} (wall), "
                f"{result['job']['overhead_cpu']:+.4f} (CPU)",
                flush=True,
            )
            result["client"] = client_interleaved(switch, sim.base_url, client_phases, block)
            print(
                f"  client: {result['client']['pairs']} pairs, overhead {result['client']['overhead_wall']:+.4f} "
                f"(wall), {result['client']['overhead_cpu']:+.4f} (CPU)",
                flush=True,
            )
    gc.unfreeze()
    costs = per_call_costs()
    result["per_call"] = costs
    # The same question answered from the costs per call: the metrics' CPU per request (a job's accept steps add
    # theirs, per step) over the CPU this process spent per request without them.
    job = result["job"]
    steps_per_request = job["observed_accept_steps"] / job["observed_requests"]
    per_request_ns = costs["per_request_ns"] + steps_per_request * costs["accept_step_observations_ns"]
    result["job_overhead_from_costs"] = round(per_request_ns / 1e6 / job["without"]["cpu_s_per_work_ms"], 5)
    result["client_overhead_from_costs"] = round(
        costs["per_request_ns"] / 1e6 / result["client"]["without"]["cpu_s_per_work_ms"], 5
    )
    # The figure: the job's CPU time in this process per request, with over without. The metrics only add CPU
    # work to the process that calls them (no I/O, no waits); wall time on a shared machine is mostly other
    # processes' scheduling, and is reported beside it.
    result["metrics_overhead"] = job["overhead_cpu"]
    result["metrics_overhead_basis"] = "job, CPU time of the process per request (median of ABBA pairs)"
    return result


# --- (d) the cost of a scrape ----------------------------------------------------------------------------------


def scrape_section(repeats: int, finished_jobs: int) -> dict[str, Any]:
    """GET /metrics in this process (the app over ASGI: the route's thread, the fleet's queries, the text
    format), on the dataset (a) left behind, with `finished_jobs` finished jobs added beside its four."""
    from fastapi.testclient import TestClient

    try:
        from app.main import create_app
    except Exception as exc:  # noqa: BLE001 (the service may be mid-change in this checkout)
        return {"skipped": f"the service does not import here: {type(exc).__name__}: {exc}"}

    admin = _admin()
    with admin.connect() as conn:
        exists = {name for (name,) in conn.execute(text("SELECT datname FROM pg_database"))}
    admin.dispose()
    if WORK_DB not in exists:  # run alone: the accept runs' starting point
        if TEMPLATE_DB not in exists:
            build_template(max(WORKER_COUNTS))
        recreate_database(WORK_DB, TEMPLATE_DB)
    url = pg_url(WORK_DB)
    engine = create_db_engine(url)
    with engine.begin() as conn:
        dataset_id = conn.scalar(select(func.min(Item.dataset_id)))
        conn.execute(
            insert(GenerationJob.__table__),
            [
                {
                    "dataset_id": dataset_id,
                    "params": {"count": 100, "backend": BACKEND},
                    "backend": BACKEND,
                    "seed": i,
                    "status": "succeeded",
                    "requested": 100,
                    "filtered": {},
                }
                for i in range(finished_jobs)
            ],
        )
    with engine.connect() as conn:
        items = conn.scalar(select(func.count()).select_from(Item))
        jobs = conn.scalar(select(func.count()).select_from(GenerationJob))
    engine.dispose()
    settings = bench_settings(url).model_copy(update={"worker_enabled": False})
    app = create_app(settings)
    times, fleet = [], []
    with TestClient(app) as client:
        response = client.get("/metrics")
        status = response.status_code
        if status != 200 or "sprout_fleet_scrape_seconds" not in response.text:
            return {"skipped": f"GET /metrics answered {status} without the fleet figures"}
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.get("/metrics")
            times.append(time.perf_counter() - started)
            for family in text_string_to_metric_families(response.text):
                for sample in family.samples:
                    if sample.name == "sprout_fleet_scrape_seconds":
                        fleet.append(sample.value)
                    elif sample.name == "sprout_fleet_scrape_error" and sample.value:
                        raise RuntimeError("the fleet collector could not read the database")
    times.sort()
    return {
        "status": status,
        "items": items,
        "jobs": jobs,
        "bytes": len(response.content),
        "repeats": repeats,
        "p50_ms": round(1000 * statistics.median(times), 2),
        "p95_ms": round(1000 * times[int(0.95 * (len(times) - 1))], 2),
        "max_ms": round(1000 * times[-1], 2),
        "fleet_queries_p50_ms": round(1000 * statistics.median(fleet), 2) if fleet else None,
    }


# --- the run ---------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    with contextlib.suppress(Exception):
        admin = _admin()
        with admin.connect() as conn:
            postgres = conn.scalar(text("SHOW server_version"))
        admin.dispose()
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgres": locals().get("postgres"),
        "git_commit": git("rev-parse", "HEAD").strip(),
        # Other engineers work in the same checkout: files changed but not committed when the bench ran.
        "uncommitted": [
            line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line
        ],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


SECTIONS = ("accept", "claims", "overhead", "scrape")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=2, help="accept runs per worker count (alternating order)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds after every worker accepts")
    parser.add_argument("--window", type=float, default=12.0, help="seconds counted per accept run")
    parser.add_argument("--claim-jobs", type=int, default=500, help="jobs claimed per claim run")
    parser.add_argument("--claim-rounds", type=int, default=2, help="claim runs per process count")
    parser.add_argument("--claim-datasets", type=int, default=32)
    parser.add_argument(
        "--job-phases", type=int, default=32, help="metrics on/off phases of the overhead job"
    )
    parser.add_argument("--phase-requests", type=int, default=240, help="requests per overhead job phase")
    parser.add_argument("--client-phases", type=int, default=32)
    parser.add_argument("--client-block", type=int, default=200, help="requests per client phase")
    parser.add_argument("--scrape-repeats", type=int, default=30)
    parser.add_argument("--scrape-jobs", type=int, default=2000, help="finished jobs added before the scrape")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run these sections (default: all)")
    parser.add_argument("--keep-databases", action="store_true", help="leave the bench databases for a look")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sections = args.only or list(SECTIONS)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.only and args.out.is_file() else {}
    started = time.monotonic()
    results.update(
        {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python bench/scale_bench.py " + " ".join(sys.argv[1:]),
            "machine": machine(),
        }
    )

    def save() -> None:
        accept = results.get("accept", {})
        for n in WORKER_COUNTS:
            results[f"accept_items_per_s_{n}"] = accept.get(f"items_per_s_{n}")
            results[f"accept_step_mean_ms_{n}"] = accept.get(f"accept_step_mean_ms_{n}")
            results[f"accept_candidates_per_s_{n}"] = accept.get(f"candidates_per_s_{n}")
        results["accept_ratio_4_1"] = accept.get("ratio_4_1")
        results["accept_items_per_cpu_s_ratio_4_1"] = accept.get("items_per_cpu_s_ratio_4_1")
        claims = results.get("claims", {})
        results["claims_per_s"] = claims.get("claims_per_s")
        results["claims_per_s_sqlite"] = claims.get("claims_per_s_sqlite")
        for n in WORKER_COUNTS:
            results[f"claims_per_s_{n}_claimers"] = claims.get("postgres", {}).get(f"claims_per_s_{n}")
            results[f"claims_per_s_{n}_claimers_sqlite"] = claims.get("sqlite", {}).get(f"claims_per_s_{n}")
        results["postgres_commit_ms"] = claims.get("postgres_commit_ms")
        overhead = results.get("overhead", {})
        results["metrics_overhead"] = overhead.get("metrics_overhead")
        results["metrics_overhead_wall"] = overhead.get("job", {}).get("overhead_wall")
        results["metrics_overhead_client_cpu"] = overhead.get("client", {}).get("overhead_cpu")
        results["metrics_overhead_client_wall"] = overhead.get("client", {}).get("overhead_wall")
        results["metrics_overhead_from_costs"] = overhead.get("job_overhead_from_costs")
        results["scrape_ms"] = results.get("scrape", {}).get("p50_ms")
        met = {
            "accept_4_ge_0.8x_1": _at_least(results["accept_ratio_4_1"], TARGETS["accept_ratio_4_1"]),
            "claims_per_s_ge_200": _at_least(results["claims_per_s"], TARGETS["claims_per_s"]),
            "metrics_overhead_le_2pct": (
                None
                if results["metrics_overhead"] is None
                else results["metrics_overhead"] <= TARGETS["metrics_overhead"]
            ),
        }
        results["targets_met"] = met
        results["all_targets_met"] = all(v is True for v in met.values())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    try:
        runs: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
            "accept": (
                "(a) accept step, 1 / 2 / 4 worker processes",
                lambda: accept_section(args.rounds, args.warmup, args.window),
            ),
            "scrape": ("(d) scrape", lambda: scrape_section(args.scrape_repeats, args.scrape_jobs)),
            "claims": (
                "(b) claim rate",
                lambda: claims_section(args.claim_jobs, args.claim_datasets, args.claim_rounds),
            ),
            "overhead": (
                "(c) metrics overhead",
                lambda: overhead_section(
                    args.job_phases, args.phase_requests, args.client_phases, args.client_block
                ),
            ),
        }
        for section, (title, run) in runs.items():  # scrape reads the database the accept runs left
            if section not in sections:
                continue
            print(title, flush=True)
            section_started = time.monotonic()
            results[section] = run()
            results[section]["section_seconds"] = round(time.monotonic() - section_started, 1)
            save()
    finally:
        if not args.keep_databases:
            drop_database(WORK_DB)
            drop_database(TEMPLATE_DB)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    save()
    for key in (
        "accept_items_per_s_1",
        "accept_items_per_s_2",
        "accept_items_per_s_4",
        "accept_ratio_4_1",
        "accept_step_mean_ms_1",
        "accept_step_mean_ms_4",
        "claims_per_s",
        "claims_per_s_1_claimers",
        "postgres_commit_ms",
        "claims_per_s_sqlite",
        "metrics_overhead",
        "metrics_overhead_wall",
        "metrics_overhead_client_cpu",
        "metrics_overhead_client_wall",
        "metrics_overhead_from_costs",
        "scrape_ms",
        "targets_met",
        "bench_seconds",
    ):
        print(f"{key:32s} {results.get(key)}")


def _at_least(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


if __name__ == "__main__":
    main()
