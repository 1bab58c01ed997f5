"""A PostgreSQL cluster of the test's own (Debian's postgresql-common tools), so a drill can stop and restart a
database server without touching the machine's shared one on 5432.

    def test_x(pg_cluster: PgCluster):
        url = pg_cluster.url            # an empty database "sprout_drill" on 127.0.0.1:<free port>, trust auth
        pg_cluster.restart(pause=2.5)   # stop -m fast, wait, start again

The cluster is named sprout_drill_<pid>_<n>, listens on localhost only (the default), and is always dropped afterwards
(`pg_dropcluster --stop`); clusters left by a test process that no longer exists (a killed run) are dropped
before a new one is made. Missing tools are a failure, not a skip: CI machines have them, and a skipped drill
would hide that the restart was never tried.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

PREFIX = "sprout_drill_"
DATABASE = "sprout_drill"
TOOLS = ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_lsclusters")
_numbers = itertools.count(1)


def _run(*cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def installed_version() -> str:
    """SPROUT_DRILL_PG_VERSION, else the newest server version installed under /usr/lib/postgresql."""
    chosen = os.environ.get("SPROUT_DRILL_PG_VERSION")
    if chosen:
        return chosen
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p.name for p in root.iterdir() if (p / "bin" / "postgres").is_file()) if root.is_dir() else [],
        key=lambda v: [int(x) for x in re.findall(r"\d+", v)],
    )
    if not versions:
        pytest.fail(
            "no PostgreSQL server under /usr/lib/postgresql (install postgresql) for the restart drill"
        )
    return versions[-1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_leftovers() -> list[str]:
    """Drop sprout_drill_<pid>_<n> clusters whose test process is gone (a run killed before its cleanup)."""
    listed = _run("pg_lsclusters", "--no-header", check=False)
    dropped = []
    for line in listed.stdout.splitlines():
        fields = line.split()
        if len(fields) < 2 or not fields[1].startswith(PREFIX):
            continue
        match = re.match(rf"^{PREFIX}(\d+)_\d+$", fields[1])
        if match and not _pid_alive(int(match.group(1))):
            _run("pg_dropcluster", "--stop", fields[0], fields[1], check=False)
            dropped.append(fields[1])
    return dropped


@dataclass(frozen=True)
class PgCluster:
    version: str
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _ctl(self, action: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return _run("pg_ctlcluster", self.version, self.name, action, *extra)

    def running(self) -> bool:
        return _run("pg_ctlcluster", self.version, self.name, "status", check=False).returncode == 0

    def stop(self) -> None:
        """A fast shutdown: open transactions are rolled back, every connection is cut."""
        self._ctl("stop", "-m", "fast")

    def start(self, timeout: float = 60.0) -> None:
        self._ctl("start")
        self.wait_ready(timeout)

    def restart(self, pause: float = 2.5) -> None:
        """Stop, stay down `pause` seconds (clients see refused connections, not just a blip), start."""
        self.stop()
        time.sleep(pause)
        self.start()

    def wait_ready(self, timeout: float = 60.0, database: str = "postgres") -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=self.port, user="postgres", dbname=database, connect_timeout=2
                ):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"cluster {self.name} not ready after {timeout:g} s: {exc}") from exc
                time.sleep(0.1)

    def log_tail(self, chars: int = 3000) -> str:
        path = Path(f"/var/log/postgresql/postgresql-{self.version}-{self.name}.log")
        try:
            return path.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"(no log at {path}: {exc})"


@contextmanager
def own_postgres_cluster() -> Iterator[PgCluster]:
    """Create, start and yield a cluster with an empty database; drop it (stopping it first) whatever happens."""
    import psycopg

    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: the database-restart drill needs postgresql-common "
            "(apt-get install postgresql) to run a PostgreSQL cluster of its own"
        )
    drop_leftovers()
    version = installed_version()
    cluster = PgCluster(version, f"{PREFIX}{os.getpid()}_{next(_numbers)}", _free_port())
    try:
        _run(
            "pg_createcluster",
            version,
            cluster.name,
            "--port",
            str(cluster.port),
            "--start-conf",
            "manual",
            "-o",
            "fsync=off",  # a throwaway cluster: durability across power loss is not what is drilled
            "-o",
            "max_connections=200",
            "--",
            "--auth=trust",
        )
        cluster.start()
        with psycopg.connect(
            host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        yield cluster
    finally:
        _run("pg_dropcluster", "--stop", version, cluster.name, check=False)


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    with own_postgres_cluster() as cluster:
        yield cluster


__all__ = ["PgCluster", "drop_leftovers", "own_postgres_cluster", "pg_cluster"]
