"""Per-process Prometheus metrics: what this process saw of its LLM requests, accept steps and claims.

Each process (a service instance, a `sprout worker`) counts its own; Prometheus adds them up. Fleet-wide figures
(jobs, queue, items, heartbeats) are not here: any instance reads those from the database at scrape time
(app/ops/fleet.py). Label values are configured names only (backend names, replica URLs from the settings,
job kinds), never caller text, so the number of series stays bounded.
"""

from __future__ import annotations

import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# Replies of a large model take seconds to minutes; accept steps milliseconds to seconds.
_LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 600)
_ACCEPT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

LLM_REQUEST_SECONDS = Histogram(
    "sprout_llm_request_seconds",
    "Time of one LLM request that got an answer (retries of it included), per backend and replica.",
    ["backend", "replica"],
    buckets=_LLM_BUCKETS,
)
LLM_TOKENS = Counter(
    "sprout_llm_tokens",
    "Tokens the LLM server reported, per backend, replica and type (prompt or completion).",
    ["backend", "replica", "type"],
)
LLM_ERRORS = Counter(
    "sprout_llm_errors",
    "Failed LLM attempts per backend, replica and kind (connection, timeout, http_429, http_5xx, "
    "http_4xx, fatal, invalid_reply). A retried attempt counts here too.",
    ["backend", "replica", "kind"],
)
LLM_IN_FLIGHT = Gauge(
    "sprout_llm_in_flight",
    "Requests this process has in flight, per backend and replica.",
    ["backend", "replica"],
)
REPLICA_UP = Gauge(
    "sprout_llm_replica_up",
    "1 while a replica is in rotation, 0 while its /health fails (taken out), per backend and replica.",
    ["backend", "replica"],
)
REPLICA_EJECTIONS = Counter(
    "sprout_llm_replica_ejections",
    "Times a replica was taken out of rotation (failed health check or connection).",
    ["backend", "replica"],
)
ACCEPT_SECONDS = Histogram(
    "sprout_accept_step_seconds",
    "Time of one accept step (index catch-up, dedup, insert, counters: one transaction).",
    buckets=_ACCEPT_BUCKETS,
)
ACCEPT_CANDIDATES = Counter(
    "sprout_accept_candidates", "Candidates through the accept step, by verdict.", ["verdict"]
)
JOBS_CLAIMED = Counter("sprout_jobs_claimed", "Jobs this process claimed, by kind.", ["kind"])
JOBS_FINISHED = Counter(
    "sprout_jobs_finished",
    "Jobs this process ran to an end or handed back, by kind and outcome.",
    ["kind", "outcome"],
)
WORKER_HEARTBEAT = Gauge(
    "sprout_worker_heartbeat_timestamp_seconds",
    "When this process's worker last wrote its heartbeat (Unix time).",
    ["worker"],
)


def observe_llm_request(
    backend: str, replica: str, seconds: float, prompt_tokens: int, completion_tokens: int
) -> None:
    LLM_REQUEST_SECONDS.labels(backend, replica).observe(seconds)
    if prompt_tokens:
        LLM_TOKENS.labels(backend, replica, "prompt").inc(prompt_tokens)
    if completion_tokens:
        LLM_TOKENS.labels(backend, replica, "completion").inc(completion_tokens)


def count_llm_error(backend: str, replica: str, kind: str) -> None:
    LLM_ERRORS.labels(backend, replica, kind).inc()


def mark_heartbeat(worker_id: str) -> None:
    WORKER_HEARTBEAT.labels(worker_id).set(time.time())


def process_registry() -> CollectorRegistry:
    """The registry holding this process's own metrics (and the process collector's CPU and memory)."""
    return REGISTRY
