"""The real-server pytest fixtures as a plugin module: `pytest_plugins = ["tests.support.openai_fixtures"]`.

Servers start lazily, the first time a test asks for one, and once per session.

Kept apart from openai_server.py so registering it never re-imports a module that tests already imported
(pytest could then not rewrite its asserts and warns); a plugin is registered once, so every module that asks
for a server shares one per session.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.config import DEFAULT_MODEL_NAME
from tests.support.openai_server import RunningServer, openai_server, running_openai_server
from tests.support.vllm_server import VLLMServer, running_vllm_server

__all__ = ["llama_cpp_server", "openai_server", "vllm_checkpoint", "vllm_server"]


@pytest.fixture(scope="session")
def llama_cpp_server() -> Iterator[RunningServer]:
    """llama-cpp-python's own OpenAI-compatible server with the embedded model, one per session."""
    with running_openai_server(implementation="llama_cpp") as server:
        yield server


@pytest.fixture(scope="session")
def vllm_checkpoint() -> Path:
    """The embedded model as a Hugging Face checkpoint, made by `sprout models prepare` (cached outside the
    checkout: converting takes half a minute, reusing it a fraction of a second)."""
    target = cache_dir() / "checkpoints" / DEFAULT_MODEL_NAME
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "models", "prepare", "--out", str(target)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        pytest.fail(f"sprout models prepare failed:\n{result.stdout}\n{result.stderr}")
    return target


@pytest.fixture(scope="session")
def vllm_server(vllm_checkpoint: Path) -> Iterator[VLLMServer]:
    """One real vLLM server (CPU build, its own virtualenv, LoRA enabled) for the whole session, stopped by PID.
    A machine that cannot build it fails the tests that need it: they are never skipped."""
    with running_vllm_server(vllm_checkpoint, DEFAULT_MODEL_NAME) as server:
        yield server


def cache_dir() -> Path:
    """Where builds that outlive a checkout go (the vLLM virtualenv, the converted checkpoint)."""
    root = os.environ.get("SPROUT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sprout"
    )
    return Path(root)
