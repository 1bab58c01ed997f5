"""Benchmark of the generation engine: how close a Sprout job comes to saturating the model server, and the
pipeline's own ceiling. Everything is measured side by side in one run (these machines are noisy).

(a) A bare client (the official openai SDK, nothing else) keeps N sequences in flight, replaying exactly the
    request bodies a Sprout job sent (captured from the job's own HTTP client), against (b) that Sprout job with
    default job parameters, against the same real vLLM CPU server. Output lengths are fixed
    (min_tokens = max_tokens); tokens are counted from the server's `usage`. A and B alternate; medians are
    compared. During (b), vLLM's own `vllm:num_requests_running` is sampled from its /metrics.
(c) The same pair against a simulated OpenAI-compatible server in its own process (tests/support/sim_server.py:
    lognormal answer times, median 1 s, sigma 0.6, unlimited concurrency; realistic tasks drawn from the bench
    instructions, some of them near-duplicates) at N = 16 and N = 64, at least 2,000 requests, the whole job
    timed, tail included.
(d) The ceiling: the same simulated server answering at once, the dataset's index preloaded with the 35,516
    bench instructions (as items), default commit cadence; accepted items per second counted in the database
    (over the span of the stored replies), on SQLite and on PostgreSQL.

Usage (from the repository root; PostgreSQL as in the tests, SPROUT_TEST_POSTGRES_URL):
    .venv/bin/python bench/generation_bench.py [--rounds 2] [--only ceiling|sim|vllm ...]
Writes bench/results/generation.json and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx2  # noqa: E402
import openai  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from app.core.config import BackendSettings, Settings  # noqa: E402
from app.core.db import create_db_engine, make_session_factory, run_migrations, transaction  # noqa: E402
from app.datasets.seed_formats import parse_seed_file  # noqa: E402
from app.datasets.service import create_dataset, import_seeds  # noqa: E402
from app.generation.models import GenerationJob, GenerationReply, Item  # noqa: E402
from app.generation.params import GenerationParams  # noqa: E402
from app.generation.pipeline.runner import GenerationRunner  # noqa: E402
from app.generation.service import queue_job  # noqa: E402
from app.jobs.queue import claim_next  # noqa: E402
from app.llm.openai_compat import OpenAICompatBackend  # noqa: E402
from app.llm.registry import BackendRegistry  # noqa: E402

DATA = Path(os.environ.get("SPROUT_SHARED_DATA", REPO.parent / "shared" / "data"))
BENCH_INSTRUCTIONS = DATA / "bench_instructions.jsonl.gz"
SEEDS = REPO / "seeds" / "default.jsonl"
OUT = REPO / "bench" / "results" / "generation.json"
RUNNING_RE = re.compile(r"^vllm:num_requests_running\{[^}]*\}\s+([0-9.eE+-]+)", re.MULTILINE)


# --- the two clients -------------------------------------------------------------------------------------------


def sprout_job(
    database_url: str,
    backend: BackendSettings,
    params: GenerationParams,
    *,
    preload: list[str] | None = None,
    capture: list[dict[str, Any]] | None = None,
    metrics_url: str | None = None,
) -> dict[str, Any]:
    """Run one Sprout job to its end in this process (as `sprout generate` does) and measure it."""
    run_migrations(database_url)
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    settings = Settings(
        _env_file=None, database_url=database_url, backends={"bench": backend}, default_backend="bench"
    )  # type: ignore[call-arg]

    def factory(name: str, backend_settings: BackendSettings) -> OpenAICompatBackend:
        hooks = {"request": [_recorder(capture)]} if capture is not None else {}
        client = httpx2.AsyncClient(
            limits=httpx2.Limits(
                max_connections=backend_settings.in_flight + 8,
                max_keepalive_connections=backend_settings.in_flight + 8,
            ),
            timeout=backend_settings.timeout,
            event_hooks=hooks,
        )
        return OpenAICompatBackend(name, backend_settings, http_client=client)

    registry = BackendRegistry(settings.backends, factory=factory)
    with transaction(sessions) as session:
        dataset = create_dataset(session, f"bench-{time.time_ns()}")
        import_seeds(
            session, dataset, parse_seed_file(SEEDS.read_bytes(), filename=SEEDS.name), source=SEEDS.name
        )
        if preload:
            rows = [
                {
                    "dataset_id": dataset.id,
                    "instruction": t,
                    "input": "",
                    "output": "-",
                    "status": "pending",
                    "model": "preload",
                    "filter_reason": None,
                    "duplicate_signal": None,
                }
                for t in preload
            ]
            for start in range(0, len(rows), 5000):
                session.execute(insert(Item.__table__), rows[start : start + 5000])
        job_id = queue_job(session, dataset.id, params, settings, registry).id
    with transaction(sessions) as session:
        claim = claim_next(session, GenerationJob, "bench", 300, job_id=job_id)

    async def go() -> tuple[float, list[float]]:
        sampler = asyncio.create_task(_sample_running(metrics_url)) if metrics_url else None
        started = time.perf_counter()
        try:
            await GenerationRunner(sessions, settings, registry).run(claim)  # type: ignore[arg-type]
        finally:
            wall = time.perf_counter() - started
            samples = []
            if sampler is not None:
                sampler.cancel()
                samples = await asyncio.gather(sampler, return_exceptions=True)
                samples = samples[0] if isinstance(samples[0], list) else []
            await registry.aclose()
        return wall, samples

    wall, running = asyncio.run(go())
    with sessions() as session:
        job = session.get(GenerationJob, job_id)
        first, last = session.execute(
            select(func.min(GenerationReply.created_at), func.max(GenerationReply.created_at)).where(
                GenerationReply.job_id == job_id
            )
        ).one()
        result = {
            "status": job.status.value,
            "wall_s": round(wall, 3),
            "requests": job.requests,
            "errors": job.errors,
            "accepted": job.accepted,
            "parsed": job.parsed,
            "duplicates": job.duplicates,
            "completion_tokens": job.completion_tokens,
            "reply_span_s": round((last - first).total_seconds(), 3) if first and last else 0.0,
        }
    engine.dispose()
    if running:
        result["running_samples"] = len(running)
        result["mean_running"] = round(statistics.fmean(running), 2)
    return result


def _recorder(capture: list[dict[str, Any]] | None) -> Any:
    async def record(request: httpx2.Request) -> None:
        if capture is not None and request.method == "POST":
            capture.append({"path": request.url.path, "body": json.loads(request.content)})

    return record


def bare_client(
    base_url: str, requests: list[dict[str, Any]], in_flight: int, *, metrics_url: str | None = None
) -> dict[str, Any]:
    """The same request bodies through the openai SDK's plain POST, `in_flight` requests at a time, as fast as
    the server answers: what the server can do for this client, with nothing else in the way."""

    async def go() -> dict[str, Any]:
        client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key="",
            admin_api_key="",
            max_retries=0,
            timeout=3600,
            default_headers={"OpenAI-Organization": openai.omit, "OpenAI-Project": openai.omit},
            http_client=httpx2.AsyncClient(
                limits=httpx2.Limits(max_connections=in_flight + 8, max_keepalive_connections=in_flight + 8),
                timeout=3600,
            ),
        )
        semaphore = asyncio.Semaphore(in_flight)
        tokens = 0

        async def one(request: dict[str, Any]) -> None:
            nonlocal tokens
            async with semaphore:
                path = request["path"].split("/v1", 1)[-1]
                response = await client.post(
                    path,
                    body=request["body"],
                    cast_to=httpx2.Response,
                    options={"headers": {"Authorization": openai.omit}},
                )
                tokens += int((json.loads(response.content).get("usage") or {}).get("completion_tokens") or 0)

        sampler = asyncio.create_task(_sample_running(metrics_url)) if metrics_url else None
        started = time.perf_counter()
        await asyncio.gather(*(one(r) for r in requests))
        wall = time.perf_counter() - started
        samples: list[float] = []
        if sampler is not None:
            sampler.cancel()
            got = await asyncio.gather(sampler, return_exceptions=True)
            samples = got[0] if isinstance(got[0], list) else []
        await client.close()
        result = {"wall_s": round(wall, 3), "requests": len(requests), "completion_tokens": tokens}
        if samples:
            result["mean_running"] = round(statistics.fmean(samples), 2)
        return result

    return asyncio.run(go())


async def _sample_running(metrics_url: str | None) -> list[float]:
    """vllm:num_requests_running every quarter second (the simulated server exposes the same gauge)."""
    samples: list[float] = []
    async with httpx2.AsyncClient(timeout=5) as client:
        try:
            while True:
                try:
                    text = (await client.get(metrics_url)).text  # type: ignore[arg-type]
                    samples.append(sum(float(v) for v in RUNNING_RE.findall(text)))
                except httpx2.HTTPError:
                    pass
                await asyncio.sleep(0.25)
        except asyncio.CancelledError:
            return samples


# --- databases ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        yield f"sqlite:///{directory}/bench.db"


@contextlib.contextmanager
def postgres_url() -> Iterator[str]:
    from tests.support.databases import fresh_postgres_database

    with fresh_postgres_database() as url:
        yield url


# --- the comparisons -----------------------------------------------------------------------------------------


def alternate(label: str, rounds: int, run_b: Any, run_a: Any) -> dict[str, Any]:
    """B, A, B, A, ...: B (Sprout) first, since its first run captures the bodies A replays."""
    a_runs, b_runs = [], []
    for round_no in range(rounds):
        b_runs.append(run_b(round_no))
        print(f"  {label} round {round_no + 1}: sprout {b_runs[-1]['wall_s']:.1f} s", flush=True)
        a_runs.append(run_a(round_no))
        print(f"  {label} round {round_no + 1}: bare   {a_runs[-1]['wall_s']:.1f} s", flush=True)
    a = statistics.median(r["wall_s"] for r in a_runs)
    b = statistics.median(r["wall_s"] for r in b_runs)
    return {
        "ratio": round(a / b, 4),
        "bare_median_s": a,
        "sprout_median_s": b,
        "bare_runs": a_runs,
        "sprout_runs": b_runs,
    }


def simulated(n: int, requests: int, rounds: int) -> dict[str, Any]:
    from tests.support.sim_server import running_sim_server

    captured: list[dict[str, Any]] = []
    params = GenerationParams(
        count=1_000_000, max_prompts=requests
    )  # only the budget ends it: exactly `requests`
    with running_sim_server(
        pool=str(BENCH_INSTRUCTIONS), mutate_rate=0.2, latency="lognormal", median=1.0, sigma=0.6, seed=n
    ) as sim:
        backend = sim.backend_settings(max_in_flight=n)

        def run_b(round_no: int) -> dict[str, Any]:
            with sqlite_url() as url:
                return sprout_job(
                    url,
                    backend,
                    params,
                    capture=captured if round_no == 0 else None,
                    metrics_url=sim.metrics_url,
                )

        def run_a(round_no: int) -> dict[str, Any]:
            return bare_client(sim.base_url, captured, n, metrics_url=sim.metrics_url)

        result = alternate(f"simulated N={n}", rounds, run_b, run_a)
    result.update({"n": n, "requests": requests, "latency": "lognormal median 1 s sigma 0.6"})
    return result


def ceiling(database: str, repeats: int) -> dict[str, Any]:
    from tests.support.sim_server import running_sim_server

    with gzip.open(BENCH_INSTRUCTIONS, "rt", encoding="utf-8") as lines:
        preload = [json.loads(line)["instruction"] for line in lines]
    params = GenerationParams(count=1_000_000, max_prompts=2000)
    runs = []
    with running_sim_server(pool=str(BENCH_INSTRUCTIONS), rewrite_rate=0.6, latency="zero", seed=3) as sim:
        for _ in range(repeats):
            with sqlite_url() if database == "sqlite" else postgres_url() as url:
                run = sprout_job(url, sim.backend_settings(), params, preload=preload)
            run["items_per_s"] = round(run["accepted"] / run["reply_span_s"], 1)
            runs.append(run)
            print(
                f"  ceiling {database}: {run['items_per_s']:.0f} accepted items/s ({run['accepted']} in {run['reply_span_s']:.1f} s)",
                flush=True,
            )
    return {
        "database": database,
        "preloaded": len(preload),
        "items_per_s": statistics.median(r["items_per_s"] for r in runs),
        "runs": runs,
    }


def vllm(n: int, prompts: int, rounds: int, tokens: int) -> dict[str, Any]:
    from app.llm.checkpoint import prepare_hf_checkpoint
    from tests.support.openai_fixtures import cache_dir
    from tests.support.vllm_server import running_vllm_server

    checkpoint = prepare_hf_checkpoint(cache_dir() / "checkpoints" / "SmolLM2-135M-Instruct")
    captured: list[dict[str, Any]] = []
    # Completions mode: with fixed output lengths (vLLM ignores min_tokens once a JSON schema is satisfied, and
    # ignore_eos makes it write past the JSON), and default job parameters otherwise (4 prompts per request).
    params = GenerationParams(count=1_000_000, max_prompts=prompts, max_tokens=tokens)
    # Prefix caching off: the bare client replays prompts the Sprout job sent minutes before, which a warm cache
    # would answer with no prefill at all. Off, both sides pay for every prompt.
    with running_vllm_server(
        checkpoint, "SmolLM2-135M-Instruct", extra_args=["--no-enable-prefix-caching"]
    ) as server:
        backend = BackendSettings(
            kind="openai",
            base_url=server.base_url,
            model=server.model,
            mode="completions",
            max_in_flight=n,
            extra_body={"min_tokens": tokens},
        )

        def run_b(round_no: int) -> dict[str, Any]:
            with sqlite_url() as url:
                return sprout_job(
                    url,
                    backend,
                    params,
                    capture=captured if round_no == 0 else None,
                    metrics_url=server.metrics_url,
                )

        def run_a(round_no: int) -> dict[str, Any]:
            per_request = max(1, len(captured[0]["body"].get("prompt", [""])))
            return bare_client(
                server.base_url, captured, max(1, n // per_request), metrics_url=server.metrics_url
            )

        result = alternate(f"vLLM N={n}", rounds, run_b, run_a)
    sprout_running = [r["mean_running"] for r in result["sprout_runs"] if "mean_running" in r]
    result.update(
        {
            "n": n,
            "prompts": prompts,
            "tokens_per_sequence": tokens,
            "mean_running_sprout": statistics.median(sprout_running) if sprout_running else None,
            "running_fraction": round(statistics.median(sprout_running) / n, 4) if sprout_running else None,
            "bare_tokens_per_s": round(
                statistics.median(r["completion_tokens"] / r["wall_s"] for r in result["bare_runs"]), 2
            ),
            "sprout_tokens_per_s": round(
                statistics.median(r["completion_tokens"] / r["wall_s"] for r in result["sprout_runs"]), 2
            ),
        }
    )
    return result


SECTIONS = ("ceiling", "sim", "vllm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternating A/B rounds per comparison")
    parser.add_argument("--sim-requests", type=int, default=2000)
    parser.add_argument("--ceiling-repeats", type=int, default=3)
    parser.add_argument("--vllm-n", type=int, default=16)
    parser.add_argument("--vllm-prompts", type=int, default=32, help="prompts per vLLM job (2 waves of N=16)")
    # Replies of a realistic length (five tasks run to a few hundred tokens). With fixed lengths the sequences of
    # a wave end together and the next wave's prefill, seconds on a CPU, shows in the running gauge whichever
    # client sends it; short replies would measure that more than the client.
    parser.add_argument("--vllm-tokens", type=int, default=256, help="output tokens per sequence (fixed)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run these sections (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sections = args.only or list(SECTIONS)
    # Sections run alone merge into the existing results; each is written as soon as it is done.
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.only and args.out.is_file() else {}
    results.update(
        {
            "date": date.today().isoformat(),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
        }
    )

    def save() -> None:
        summary = {
            "vllm_ratio": results.get("vllm", {}).get("ratio"),
            "vllm_running_fraction": results.get("vllm", {}).get("running_fraction"),
            "sim_ratio_16": results.get("sim_16", {}).get("ratio"),
            "sim_ratio_64": results.get("sim_64", {}).get("ratio"),
            "ceiling_items_per_s": results.get("ceiling_sqlite", {}).get("items_per_s"),
            "ceiling_items_per_s_postgres": results.get("ceiling_postgres", {}).get("items_per_s"),
        }
        results.update(summary)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    if "ceiling" in sections:
        print("(d) ceiling", flush=True)
        results["ceiling_sqlite"] = ceiling("sqlite", args.ceiling_repeats)
        results["ceiling_postgres"] = ceiling("postgres", args.ceiling_repeats)
        save()
    if "sim" in sections:
        print("(c) simulated server", flush=True)
        results["sim_16"] = simulated(16, args.sim_requests, args.rounds)
        results["sim_64"] = simulated(64, args.sim_requests, args.rounds)
        save()
    if "vllm" in sections:
        print("(a)/(b) vLLM", flush=True)
        results["vllm"] = vllm(args.vllm_n, args.vllm_prompts, args.rounds, args.vllm_tokens)
        save()
    for key in (
        "vllm_ratio",
        "vllm_running_fraction",
        "sim_ratio_16",
        "sim_ratio_64",
        "ceiling_items_per_s",
        "ceiling_items_per_s_postgres",
    ):
        print(f"{key:32s} {results.get(key)}")


if __name__ == "__main__":
    main()
