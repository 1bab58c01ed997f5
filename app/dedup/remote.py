"""A NearDuplicateIndex in a child process of its own.

The generation pipeline's other work (HTTP replies, parsing, the database) runs in the service's process, and
its threads share one interpreter lock with the index's pure-Python parts. Under load the lock's hand-offs
made a check three to four times slower than the same check alone. In its own process the index has a core
to itself; the caller waits on a pipe, which holds no lock.

The child knows nothing of the database or the service: it receives (key, text) pairs and returns
DuplicateChecks. It exits when its socket closes, so a parent killed without warning leaves no child behind.
It is started as `python -m app.dedup.remote FD` rather than through multiprocessing, whose start methods
re-import the parent's main module (the CLI, a script) in the child.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Hashable, Iterable
from multiprocessing.connection import Connection
from typing import Any

from app.dedup.index import DuplicateCheck, NearDuplicateIndex

__all__ = ["IndexProcess"]


class IndexProcess:
    """The parts of NearDuplicateIndex the accept step uses, served by a child process.

    Thread-safe (one call at a time). `close()` ends the child; so does dropping the last reference.
    """

    def __init__(self, **index_options: Any) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "app.dedup.remote", str(theirs.fileno())], pass_fds=[theirs.fileno()]
            )
            self._conn = Connection(os.dup(ours.fileno()))
        self._lock = threading.Lock()
        self._call("start", index_options)  # an option error (a bad threshold) surfaces here, in the caller

    def add_many(self, pairs: Iterable[tuple[Hashable, str]]) -> None:
        self._call("add_many", list(pairs))

    def check_and_add_many(self, pairs: Iterable[tuple[Hashable, str]]) -> list[DuplicateCheck]:
        return self._call("check_and_add_many", list(pairs))

    def __len__(self) -> int:
        return self._call("len")

    def close(self) -> None:
        with self._lock:
            if self._conn.closed:
                return
            self._conn.close()  # the child sees end of file and exits
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown: nothing left to tell)
            pass

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            if self._conn.closed:
                raise RuntimeError("the index process is closed")
            try:
                self._conn.send((method, args))
                ok, value = self._conn.recv()
            except (EOFError, OSError) as exc:
                raise RuntimeError(f"the index process stopped (exit code {self._process.poll()})") from exc
        if not ok:
            raise value
        return value


def _serve(conn: Connection) -> None:
    """The child's loop: one call at a time until the parent closes the socket."""
    index: NearDuplicateIndex | None = None
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if method == "start":
                index = NearDuplicateIndex(**args[0])
                result: Any = None
            elif index is None:
                raise RuntimeError("the index process was not started")
            elif method == "len":
                result = len(index)
            elif method == "add_many":
                result = index.add_many(*args)
            elif method == "check_and_add_many":
                result = index.check_and_add_many(*args)
            else:
                raise ValueError(f"unknown index call {method!r}")
            conn.send((True, result))
        except Exception as exc:  # noqa: BLE001 (the parent re-raises it)
            conn.send((False, exc))


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
