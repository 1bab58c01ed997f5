"""Starting and stopping the servers the tests own: wait until one answers, stop exactly that process, and
show the end of its log when it fails."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from typing import IO

import httpx


def wait_until_ready(
    process: subprocess.Popen[bytes],
    url: str,
    *,
    timeout: float,
    log: IO[bytes],
    name: str,
    headers: Mapping[str, str] | None = None,
    poll: float = 0.1,
) -> None:
    """Return once GET `url` is 200; fail early, with the log's tail, if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0, trust_env=False, headers=dict(headers or {})) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail(log)}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(poll)
    raise RuntimeError(f"{name} not ready after {timeout:g} s:\n{tail(log)}")


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate the process we started (and only it), killing it if it does not go in `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def tail(log: IO[bytes], chars: int = 4000) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode("utf-8", "replace")[-chars:]
