"""Browser tests' support: the real app served by uvicorn on a free loopback port (each its own temporary SQLite
database), Debian's Chromium driven by Playwright, and helpers to log in through the real form and to catch
what must never happen on a page: a script error, a console error (CSP violations are reported there) or a dialog.

Chromium comes from Debian (`scripts/ensure_chromium.sh` installs it); Playwright never downloads a browser here.
A missing Chromium fails the tests (it does not skip them): a silent skip would hide the whole UI.

Fixtures (tests/integration/web/conftest.py imports them): `chromium_browser` (one per module), `start_app`
(a factory: `start_app(review_lease_seconds=3)` -> LiveApp, stopped after the test) and `open_page` (a factory
of watched pages in fresh browser contexts: `page, watch = open_page(app)`; the watch fails the test on any
problem).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright
from sqlalchemy.orm import Session, sessionmaker

from app.auth.roles import Role
from app.auth.service import create_token, create_user
from app.core.db import transaction
from tests.support import app_server
from tests.support.service import make_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery staple"  # every test user's (the policy wants at least 10 characters)
ARTIFACTS_ENV = "SPROUT_TEST_ARTIFACTS"


# --- the app ----------------------------------------------------------------------------------------------------


@dataclass
class LiveApp:
    """The app answering real HTTP at `base_url`; `admin` is an httpx client with an admin's bearer token."""

    base_url: str
    app: FastAPI
    admin: httpx.Client

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The app's own session factory: for checks (and the odd change) straight in the database."""
        return self.app.state.sessions  # type: ignore[no-any-return]

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            trust_env=False,
            timeout=30.0,
        )

    def add_user(self, role: Role, name: str | None = None) -> tuple[str, str]:
        """A user made through the API, with PASSWORD and an API token: (name, token)."""
        name = name or f"{role.value}-{uuid.uuid4().hex[:6]}"
        ok(self.admin.post("/v1/users", json={"name": name, "role": role.value, "password": PASSWORD}))
        token = ok(self.admin.post("/v1/tokens", json={"user": name, "name": "browser tests"}))["token"]
        return name, token

    def add_dataset(self, name: str) -> int:
        return int(ok(self.admin.post("/v1/datasets", json={"name": name}))["id"])

    def import_items(self, dataset_id: int, records: list[dict[str, str]]) -> dict[str, Any]:
        """Alpaca records through the import API; every one must come out pending (distinct instructions)."""
        body = "\n".join(json.dumps(r) for r in records).encode()
        result = ok(
            self.admin.post(
                f"/v1/datasets/{dataset_id}/items/import",
                files={"file": ("items.jsonl", body, "application/jsonl")},
            )
        )
        assert result["accepted"] == len(records), f"some records were dropped: {result}"
        return result

    def items(self, dataset_id: int) -> list[dict[str, Any]]:
        """The dataset's items in id order."""
        page = ok(self.admin.get(f"/v1/datasets/{dataset_id}/items", params={"limit": 500}))
        assert page["next_cursor"] is None
        return sorted(page["data"], key=lambda i: i["id"])

    def item(self, item_id: int) -> dict[str, Any]:
        return ok(self.admin.get(f"/v1/items/{item_id}"))

    def events(self, item_id: int) -> list[dict[str, Any]]:
        return ok(self.admin.get(f"/v1/items/{item_id}/events"))


def ok(response: httpx.Response) -> Any:
    assert response.is_success, (
        f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
    )
    return response.json() if response.content else None


@contextmanager
def serving(database_dir: Path, **overrides: Any) -> Iterator[LiveApp]:
    """The app (no job worker) under uvicorn in a thread (tests/support/app_server.py), on a free 127.0.0.1
    port, with a fresh SQLite database in `database_dir`; an admin user is made in the database (someone has
    to be first: the tests make everyone else through the API). Stopped on exit."""
    database_dir.mkdir(parents=True, exist_ok=True)
    settings = make_settings(f"sqlite:///{database_dir / 'sprout.db'}", worker_enabled=False, **overrides)
    with app_server.serving(settings) as served:
        with transaction(served.app.state.sessions) as session:
            admin = create_user(session, f"admin-{uuid.uuid4().hex[:6]}", Role.admin)
            secret, _ = create_token(session, admin, name="browser tests")
        with httpx.Client(
            base_url=served.base_url,
            headers={"Authorization": f"Bearer {secret}"},
            trust_env=False,
            timeout=30.0,
        ) as client:
            yield LiveApp(served.base_url, served.app, client)


# --- the browser ------------------------------------------------------------------------------------------------


@dataclass
class PageWatch:
    """What went wrong on a page: uncaught script errors, console errors and dialogs (alert, confirm...).

    Console errors a test expects (a 401 when its session ends) are allowed by pattern with `allow_console`;
    dialogs a test expects (the bulk action's confirm) are answered by `on_dialog`."""

    problems: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)
    on_dialog: Callable[[Dialog], None] | None = None
    dialogs: list[str] = field(default_factory=list)
    reported: int = 0

    def attach(self, page: Page) -> None:
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def allow_console(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        text = message.text
        if not any(p.search(text) for p in self.allowed):
            self.problems.append(f"console error: {text} (at {message.location.get('url', '?')})")

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if self.on_dialog is not None:
            self.on_dialog(dialog)
            return
        self.problems.append(f"unexpected {dialog.type} dialog: {dialog.message!r}")
        dialog.dismiss()

    def assert_clean(self) -> None:
        """Fail on any problem not reported yet (so the fixture's final check does not repeat a failure)."""
        new, self.reported = self.problems[self.reported :], len(self.problems)
        assert not new, "problems on the page:\n" + "\n".join(new)


def chromium_or_fail() -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: run scripts/ensure_chromium.sh (installs Debian's chromium)",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, one per test module (each test gets fresh contexts); Playwright stops with
    the module, so its event loop never outlives the browser tests."""
    executable = chromium_or_fail()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Callable[..., LiveApp]]:
    """start_app(**settings overrides) -> a LiveApp on a fresh database; all are stopped after the test."""
    numbers = itertools.count()
    with ExitStack() as stack:

        def start(**overrides: Any) -> LiveApp:
            return stack.enter_context(serving(tmp_path / f"app-{next(numbers)}", **overrides))

        yield start


@pytest.fixture
def open_page(chromium_browser: Browser) -> Iterator[Callable[[LiveApp], tuple[Page, PageWatch]]]:
    """open_page(app) -> (page, watch): a page in a fresh context (its own cookies) with base_url = the app.
    Every watch must be clean when the test ends."""
    opened: list[tuple[Any, PageWatch]] = []

    def open_one(app: LiveApp) -> tuple[Page, PageWatch]:
        context = chromium_browser.new_context(base_url=app.base_url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(10_000)
        page = context.new_page()
        watch = PageWatch()
        watch.attach(page)
        opened.append((context, watch))
        return page, watch

    yield open_one
    for context, _ in opened:
        context.close()
    for _, watch in opened:
        watch.assert_clean()


# --- pages ------------------------------------------------------------------------------------------------------


def log_in(page: Page, name: str, password: str = PASSWORD, next_path: str | None = None) -> None:
    """Log in through the real form (GET /login, fill it, submit) and wait for the page it leads to."""
    page.goto("/login" + (f"?next={next_path}" if next_path else ""))
    submit_login_form(page, name, password)
    page.wait_for_url(lambda url: "/login" not in url)


def submit_login_form(page: Page, name: str, password: str) -> None:
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")


def artifact_dir(tmp_path: Path) -> Path:
    """Where tests leave files for people (screenshots): $SPROUT_TEST_ARTIFACTS, or the test's tmp_path."""
    configured = os.environ.get(ARTIFACTS_ENV)
    directory = Path(configured) if configured else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    return directory
