"""`sprout jobs` as a real subprocess (`python -m app.cli jobs`) against a temporary SQLite file: it lists the
jobs the services made with their progress, filters them, prints names and messages verbatim (never as rich
markup), and `--watch` redraws on a terminal until interrupted."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import PROJECT_ROOT, create_db_engine, make_session_factory, run_migrations, transaction
from app.datasets.seed_formats import SeedInstance, SeedTaskIn
from app.datasets.service import create_dataset, import_seeds
from app.generation.models import GenerationJob
from app.generation.params import GenerationParams
from app.generation.service import cancel_job, queue_job
from app.jobs.queue import claim_next, fenced_update
from app.llm.registry import BackendRegistry

NAME = "[red]night[/red] shift"
MESSAGE = "[bold]halfway[/bold] there"


def sprout(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=PROJECT_ROOT,
        env=env_for(url),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def env_for(url: str) -> dict[str, str]:
    return {**os.environ, "SPROUT_DATABASE_URL": url, "COLUMNS": "220", "NO_COLOR": "1"}


@pytest.fixture
def database(tmp_path: Path) -> tuple[str, sessionmaker[Session], list[int]]:
    """Two generation jobs of one dataset: #1 running (3 of 8 accepted, with a message), #2 queued."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    run_migrations(url)
    sessions = make_session_factory(create_db_engine(url))
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    registry = BackendRegistry.from_settings(settings)
    with transaction(sessions) as session:
        dataset = create_dataset(session, NAME)
        import_seeds(session, dataset, [SeedTaskIn("Say hello.", (SeedInstance("", "Hello"),))], source="t")
        ids = [
            queue_job(session, dataset.id, GenerationParams(count=8), settings, registry).id for _ in range(2)
        ]
    with transaction(sessions) as session:
        claim = claim_next(session, GenerationJob, "worker-7", 60.0, job_id=ids[0])
        assert claim is not None
        fenced_update(
            session,
            GenerationJob,
            claim,
            requests=2,
            raw=3,
            parsed=3,
            accepted=3,
            prompt_tokens=1000,
            completion_tokens=234,
            message=MESSAGE,
        )
    return url, sessions, ids


def test_lists_jobs_with_progress_and_filters_them(database) -> None:  # noqa: ANN001
    url, _, (running, queued) = database
    result = sprout(url, "jobs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    (first,) = [line for line in lines if f"gen #{running} " in line]
    assert "running" in first and "3/8 items 37%" in first and "worker-7" in first and "1,234" in first
    assert NAME in first and MESSAGE in first  # verbatim: rich did not read them as markup
    (second,) = [line for line in lines if f"gen #{queued} " in line]
    assert "queued" in second and "0/8 items 0%" in second
    assert lines.index(second) < lines.index(first)  # newest first

    only_running = sprout(url, "jobs", "--status", "running", "--dataset", NAME)
    assert only_running.returncode == 0, only_running.stderr
    assert f"gen #{running} " in only_running.stdout and f"gen #{queued} " not in only_running.stdout
    none = sprout(url, "jobs", "--active", "--kind", "fine_tune")
    assert none.returncode == 0 and "no jobs match" in none.stdout

    unknown = sprout(url, "jobs", "--dataset", "nope")
    assert unknown.returncode == 2 and "dataset 'nope' not found" in unknown.stderr


def test_watch_redraws_in_place_until_interrupted(database) -> None:  # noqa: ANN001
    """On a terminal (a pseudo-terminal here) the table is redrawn in place: a cancel made while it watches
    shows up without restarting it, and Ctrl-C (SIGINT) ends it cleanly."""
    url, sessions, (running, queued) = database
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "jobs", "--watch", "--interval", "0.2"],
        cwd=PROJECT_ROOT,
        env={**env_for(url), "TERM": "xterm"},
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    screen = Screen(controller)
    try:
        screen.wait_for(
            re.compile(rf"gen #{queued} .*queued")
        )  # it is watching (however long it took to start)
        with transaction(sessions) as session:
            cancel_job(session, queued)
        screen.wait_for(re.compile(rf"gen #{queued} .*cancelled"))
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, screen.text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    assert "Traceback" not in screen.text and f"gen #{running} " in screen.text


class Screen:
    """What a process wrote to its terminal, read as it comes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not pattern.search(self.text):
            left = deadline - time.monotonic()
            assert left > 0, f"{pattern.pattern!r} never appeared; the terminal showed:\n{self.text[-3000:]}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the process closed its terminal
                    chunk = b""
                assert chunk, f"the process ended; the terminal showed:\n{self.text[-3000:]}"
                self.text += chunk.decode(errors="replace")
