"""`sprout worker` processes for the drills: start them with settings in their environment, kill or stop exactly
the processes started here (by PID), and show the end of their logs when something goes wrong.

    with WorkerFleet(tmp_path, worker_env(url, backends={"sim": sim.backend_settings()})) as fleet:
        first = fleet.start()
        ...
        first.kill()  # SIGKILL: no chance to hand its jobs back
        fleet.start()

Each worker runs `python -m app.cli worker --log-format json` in a working directory of its own (so no `.env`
or `./data` of the checkout leaks in), with its stdout and stderr in one log file there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import psutil
from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def setting_value(value: Any) -> str:
    """A setting as pydantic-settings reads it from the environment: JSON for anything structured."""
    if isinstance(value, BaseModel):
        return value.model_dump_json(exclude_none=True)
    if isinstance(value, Mapping):
        return json.dumps(
            {
                k: json.loads(v.model_dump_json(exclude_none=True)) if isinstance(v, BaseModel) else v
                for k, v in value.items()
            }
        )
    if isinstance(value, list | tuple):
        return json.dumps(list(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def worker_env(database_url: str, **settings: Any) -> dict[str, str]:
    """SPROUT_* variables for a worker: the database and any Settings field (backends={"sim": BackendSettings},
    job_lease_seconds=3, ...). API keys are not carried (SecretStr dumps masked): the test servers need none."""
    env = {"SPROUT_DATABASE_URL": database_url}
    for name, value in settings.items():
        env[f"SPROUT_{name.upper()}"] = setting_value(value)
    return env


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie nobody reaped yet has stopped running: it counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def kill_leftover(pid: int, started: float | None) -> bool:
    """SIGKILL a process a killed worker left behind (its whole group when it leads one, as a trainer does),
    if it is still that same process (same start time: the pid was not reused). Whether it had to be killed."""
    if started is None or _started(pid) != started or not alive(pid):
        return False
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    poll: float = 0.05,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Poll until `predicate()` is truthy and return it; on timeout fail with `what` and the diagnostics."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{diagnostics()}" if diagnostics is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(poll)


class WorkerHandle:
    """One `sprout worker` process started by a WorkerFleet."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self.killed_children: list[int] = []  # its child processes at the moment it was killed
        self._children_started: dict[int, float | None] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> list[int]:
        """SIGKILL this worker (and only it: its children are left to fend for themselves, as after a real
        crash); returns the pids of the children it had, so a test can check that none outlives it."""
        self.killed_children = descendants(self.pid)
        self._children_started = {pid: _started(pid) for pid in self.killed_children}
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        return self.killed_children

    def kill_leftovers(self) -> list[int]:
        """After a kill: SIGKILL whichever of its children still runs (a drill that failed must not leave an
        orphaned trainer or index process behind); the pids that had to be killed."""
        return [pid for pid, started in self._children_started.items() if kill_leftover(pid, started)]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the worker hands its jobs back and exits), SIGKILL if it is still there after `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait(timeout=30)
        return self.process.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def records(self) -> list[dict[str, Any]]:
        """Its JSON log lines (anything else it printed, a traceback, is left out)."""
        found = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return found

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.process.returncode}"
        return f"<worker {self.name} pid {self.pid} {state}>"


class WorkerFleet:
    """Starts `sprout worker` processes with a common environment and stops every one of them (by PID) at the
    end, killing what does not stop; `diagnostics()` gives the tail of each one's log."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.workers: list[WorkerHandle] = []

    def start(
        self,
        *,
        concurrency: int = 2,
        trainings: int | None = None,
        args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> WorkerHandle:
        name = f"w{len(self.workers) + 1}"
        directory = self.workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("SPROUT_")}
        full_env = {
            **base,
            **self.env,
            **(env or {}),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [
            sys.executable,
            "-m",
            "app.cli",
            "worker",
            "--log-format",
            "json",
            "--concurrency",
            str(concurrency),
        ]
        if trainings is not None:
            cmd += ["--trainings", str(trainings)]
        cmd += list(args)
        log_path = directory / "worker.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                cmd,
                cwd=directory,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        handle = WorkerHandle(name, process, log_path)
        self.workers.append(handle)
        return handle

    def wait_registered(self, sessions: Any, handle: WorkerHandle, timeout: float = 60.0) -> None:
        """Until the worker has migrated (or checked) the schema and written its row in `worker`."""
        from sqlalchemy import select

        from app.jobs.models import WorkerProcess

        def registered() -> bool:
            if not handle.alive():
                raise AssertionError(
                    f"worker {handle.name} exited with {handle.process.returncode}:\n{handle.tail()}"
                )
            with sessions() as session:
                return (
                    session.scalar(select(WorkerProcess.id).where(WorkerProcess.pid == handle.pid))
                    is not None
                )

        wait_until(
            registered,
            timeout=timeout,
            what=f"worker {handle.name} to register",
            poll=0.1,
            diagnostics=self.diagnostics,
        )

    def stop_all(self, handles: Iterable[WorkerHandle] | None = None, timeout: float = 30.0) -> list[int]:
        """SIGTERM the given workers (default: all) at once and wait for each; their exit codes, in order.
        One that has not stopped after `timeout` seconds is killed (and its code is then -9)."""
        chosen = list(self.workers if handles is None else handles)
        for worker in chosen:
            if worker.alive():
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in chosen:
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.send_signal(signal.SIGKILL)
                worker.process.wait(timeout=30)
        return [worker.process.returncode for worker in chosen]

    def diagnostics(self, chars: int = 3000) -> str:
        parts = [f"--- {w!r}, log {w.log_path} (tail) ---\n{w.tail(chars)}" for w in self.workers]
        return "\n".join(parts) if parts else "(no workers started)"

    def close(self) -> None:
        """Stop every worker still running (SIGTERM to all at once, SIGKILL what remains after 30 s), and kill
        what killed workers left running (only processes they had started, checked by start time)."""
        self.stop_all([w for w in self.workers if w.alive()])
        for worker in self.workers:
            worker.kill_leftovers()

    def __enter__(self) -> WorkerFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["WorkerFleet", "WorkerHandle", "alive", "descendants", "wait_until", "worker_env"]
