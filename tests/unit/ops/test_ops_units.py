"""The ops room's pure parts: worker states, usage arithmetic, the JSON log line, and a fleet scrape that
cannot read its database."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from app.core.config import Settings
from app.ops.fleet import FleetCollector, fleet_registry
from app.ops.logs import QUIET_LOGGERS, bind, bound, configure_logging
from app.ops.service import WorkerState, WorkerView, reports_heartbeat, seconds_between, worker_state
from app.ops.usage import Usage, as_utc

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds_ago", "stopped", "state"),
    [
        (0, False, WorkerState.alive),
        (15, False, WorkerState.alive),  # exactly 3 intervals of 5 s: still alive
        (15.001, False, WorkerState.stale),
        (3600, False, WorkerState.stale),
        (0, True, WorkerState.stopped),
        (3600, True, WorkerState.stopped),
    ],
)
def test_worker_state(seconds_ago: float, stopped: bool, state: WorkerState) -> None:
    heartbeat = NOW - timedelta(seconds=seconds_ago)
    assert worker_state(heartbeat, NOW if stopped else None, NOW, heartbeat_seconds=5.0) is state


def _view(state: WorkerState, age: float) -> WorkerView:
    return WorkerView("w", "worker", "h", 1, "v", NOW, NOW, None, 0, 0, state, age)


def test_heartbeat_ages_are_reported_for_live_and_stale_workers_until_forgotten() -> None:
    assert reports_heartbeat(_view(WorkerState.alive, 1))
    assert reports_heartbeat(_view(WorkerState.stale, 3600))
    assert not reports_heartbeat(_view(WorkerState.stale, 2 * 86400))
    assert not reports_heartbeat(_view(WorkerState.stopped, 1))


def test_seconds_between_is_never_negative() -> None:
    assert seconds_between(NOW, NOW - timedelta(milliseconds=3)) == 0.0
    assert seconds_between(NOW - timedelta(seconds=90), NOW) == 90.0


def test_usage_sums_and_yield() -> None:
    a = Usage(jobs=1, parsed=200, accepted=50, completion_tokens=10_000, busy_seconds=1.5, dataset="d")
    b = Usage(jobs=2, parsed=0, accepted=0, completion_tokens=0, prompt_tokens=7, busy_seconds=2.0)
    total = sum([a, b], Usage())
    assert (total.jobs, total.parsed, total.accepted, total.completion_tokens) == (3, 200, 50, 10_000)
    assert total.busy_seconds == 3.5 and total.total_tokens == 10_007 and total.dataset is None
    assert a.acceptance_rate == 0.25 and a.accepted_per_1k_completion_tokens == 5.0
    assert b.acceptance_rate is None and b.accepted_per_1k_completion_tokens is None


def test_a_time_without_a_zone_is_utc() -> None:
    assert as_utc(datetime(2025, 1, 1, 12)) == datetime(2025, 1, 1, 12, tzinfo=UTC)
    paris = timezone(timedelta(hours=1))
    assert as_utc(datetime(2025, 1, 1, 13, tzinfo=paris)) == datetime(2025, 1, 1, 12, tzinfo=UTC)


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, quiet in levels.items():
        logging.getLogger(name).setLevel(quiet)


def test_json_lines_carry_the_bound_ids(restore_logging, capsys) -> None:  # noqa: ANN001
    configure_logging("json")
    log = logging.getLogger("app.test")
    with bound(worker_id="host:1:ab", job_id=7, dataset_id=3, job_kind="generation"):
        log.info("job %s: %s", 7, 'quotes " and\nnewlines')
    bind(worker_id=None)
    logging.getLogger("uvicorn.error").info("plain", extra={"color_message": "\x1b[1mplain\x1b[0m"})
    logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.schemas")  # not kept
    first, second = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert first["message"] == 'job 7: quotes " and\nnewlines' and first["level"] == "INFO"
    assert (first["worker_id"], first["job_id"], first["dataset_id"], first["job_kind"]) == (
        "host:1:ab",
        7,
        3,
        "generation",
    )
    assert first["logger"] == "app.test" and "time" in first
    assert second["job_id"] is None and second["logger"] == "uvicorn.error" and "color_message" not in second


def test_text_lines_append_the_ids_that_are_set(restore_logging, capsys) -> None:  # noqa: ANN001
    configure_logging("text")
    with bound(job_id=9):
        logging.getLogger("app.test").warning("slow")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("WARNING app.test: slow [job_id=9]")


def test_a_fleet_scrape_that_cannot_read_the_database_still_answers() -> None:
    """A real database without Sprout's tables: every query fails, the scrape does not."""
    engine = create_engine("sqlite://")
    registry = fleet_registry(sessionmaker(bind=engine), Settings(_env_file=None))  # type: ignore[call-arg]
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert families["sprout_fleet_scrape_error"].samples[0].value == 1
    assert "sprout_jobs" not in families and "sprout_fleet_scrape_seconds" in families
    engine.dispose()


def test_registering_the_collector_reads_nothing() -> None:
    def no_sessions() -> None:
        raise AssertionError("the database was read at registration")

    registry = CollectorRegistry()
    registry.register(FleetCollector(no_sessions, Settings(_env_file=None)))  # type: ignore[arg-type, call-arg]
    fleet_registry(no_sessions, Settings(_env_file=None))  # type: ignore[arg-type, call-arg]
