"""The browser tests' fixtures (tests/support/browser.py): Chromium, the live app, watched pages."""

from __future__ import annotations

from tests.support.browser import chromium_browser, open_page, start_app  # noqa: F401 (fixtures)
