"""The real-server pytest fixtures as a plugin module: `pytest_plugins = ["tests.support.openai_fixtures"]`.

Kept apart from openai_server.py so registering it never re-imports a module that tests already imported
(pytest could then not rewrite its asserts and warns); a plugin is registered once, so every module that asks
for it shares one server per session.
"""

from tests.support.openai_server import openai_server

__all__ = ["openai_server"]
