"""The real-server pytest fixtures as a plugin module: `pytest_plugins = ["tests.support.openai_fixtures"]`.

Kept apart from openai_server.py so registering it never re-imports a module that tests already imported
(pytest could then not rewrite its asserts and warns); a plugin is registered once, so every module that asks
for a server shares one per session.
"""

from collections.abc import Iterator

import pytest

from tests.support.openai_server import RunningServer, openai_server, running_openai_server

__all__ = ["llama_cpp_server", "openai_server"]


@pytest.fixture(scope="session")
def llama_cpp_server() -> Iterator[RunningServer]:
    """llama-cpp-python's own OpenAI-compatible server with the embedded model, one per session."""
    with running_openai_server(implementation="llama_cpp") as server:
        yield server
