"""Start a REAL OpenAI-compatible HTTP server on a free 127.0.0.1 port, serving the real embedded model.

Two implementations, both real HTTP in a subprocess:
- "sprout" (default): tests/support/openai_llama_server.py, which speaks the vLLM / OpenAI shapes Sprout
  relies on (a list of prompts per /v1/completions request, response_format json_schema).
- "llama_cpp": llama-cpp-python's own server (needs the llama-cpp-python[server] extra). It takes one prompt
  per completions request and json_object (+ schema) instead of json_schema: good to test the fallback.

Reuse: the session-scoped pytest fixture `openai_server` (defined below). Best registered as a plugin, with
`pytest_plugins = ["tests.support.openai_fixtures"]` in a test module or tests/conftest.py: a plugin registers
once, so all modules share one server. (Importing the fixture into a module also works, but each module that
does so gets a server of its own.) Then:

    def test_generate(openai_server):
        settings = openai_server.backend_settings()  # BackendSettings(kind="openai", base_url=..., model=...)
        base_url, model = openai_server  # or unpack it

Outside fixtures: `with running_openai_server() as server: ...`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pytest

from app.core.config import BackendSettings
from app.llm.llamacpp import default_model_path
from tests.support.processes import stop, wait_until_ready

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
Implementation = Literal["sprout", "llama_cpp"]


class RunningServer(NamedTuple):
    """Where the server listens. Unpacks as (base_url, model)."""

    base_url: str  # the API root, ending in /v1
    model: str

    def backend_settings(self, **overrides: Any) -> BackendSettings:
        """Settings of a named openai backend pointing at this server."""
        fields: dict[str, Any] = {"kind": "openai", "base_url": self.base_url, "model": self.model}
        return BackendSettings(**{**fields, **overrides})


def free_port() -> int:
    """A port nothing listens on right now (the kernel picks it, so collisions are unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(
    implementation: Implementation,
    *,
    model_path: Path,
    model_name: str,
    port: int,
    n_ctx: int,
    n_threads: int,
    api_key: str | None,
) -> list[str]:
    if implementation == "sprout":
        cmd = [sys.executable, "-m", "tests.support.openai_llama_server", "--model", str(model_path)]
        cmd += ["--served-model-name", model_name, "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--n-ctx", str(n_ctx), "--n-threads", str(n_threads)]
        return cmd + (["--api-key", api_key] if api_key else [])
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", model_name]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads)]
    cmd += ["--verbose", "False"]
    return cmd + (["--api_key", api_key] if api_key else [])


@contextmanager
def running_openai_server(
    *,
    implementation: Implementation = "sprout",
    model_path: str | Path | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    api_key: str | None = None,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    startup_timeout: float = 120.0,
) -> Iterator[RunningServer]:
    """Start the server, wait until GET /v1/models answers, yield where it is, and stop it afterwards.

    Only the process started here is stopped (terminate, then kill after 10 s). If it dies or does not come up
    in time, the error carries the tail of its log.
    """
    path = Path(model_path) if model_path is not None else default_model_path()
    port = free_port()
    cmd = server_command(
        implementation,
        model_path=path,
        model_name=model_name,
        port=port,
        n_ctx=n_ctx,
        n_threads=n_threads or os.cpu_count() or 1,
        api_key=api_key,
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    with tempfile.TemporaryFile(mode="w+b") as log:
        process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            server = RunningServer(f"http://127.0.0.1:{port}/v1", model_name)
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            wait_until_ready(
                process,
                f"{server.base_url}/models",
                timeout=startup_timeout,
                log=log,
                name="OpenAI-compatible test server",
                headers=headers,
            )
            yield server
        finally:
            stop(process)


@pytest.fixture(scope="session")
def openai_server() -> Iterator[RunningServer]:
    """A real OpenAI-compatible server (vLLM request shapes) serving the embedded model, one per session."""
    with running_openai_server() as server:
        yield server
