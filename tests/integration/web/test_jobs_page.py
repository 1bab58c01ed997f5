"""The jobs page in a real Chromium against the real app (with its worker) over HTTP, running real generation jobs
against the simulated model server (tests/support/sim_server.py), which answers one request at a time with a
delay so a job takes a few seconds.

Checked: a job's progress bar rises over the page's polls and ends at 100 % with the status succeeded, without
the page reloading; the Cancel button cancels a running job (through its cancel route, with the session's CSRF
token); a reviewer (no generate permission) sees the jobs but no Cancel button; the filters apply without a
reload; a fine-tuning job shows with its OpenAI status and cancels through its own route; polling pauses while
the tab is hidden and resumes when it shows again. Every page is watched: a script
error or a console error (CSP violations land there) fails the test.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, Request, expect

from app.auth.roles import Role
from app.auth.service import create_token, create_user
from app.core.config import DEFAULT_MODEL_NAME
from app.core.db import PROJECT_ROOT, transaction
from tests.support import app_server
from tests.support.browser import PASSWORD, LiveApp, PageWatch, log_in, ok
from tests.support.service import make_settings
from tests.support.sim_server import SimServer, running_sim_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

OpenPage = Callable[[LiveApp], tuple[Page, PageWatch]]
SEEDS = PROJECT_ROOT / "seeds" / "default.jsonl"
MARKUP_NAME = "<img src=x onerror=window.__xss=1>"


@pytest.fixture(scope="module")
def sim(shared_data: Path) -> Iterator[SimServer]:
    """About half a second per request; the app sends one at a time, so 30 items take several seconds."""
    with running_sim_server(
        pool=str(shared_data / "bench_instructions.jsonl.gz"),
        latency="lognormal",
        median=0.5,
        sigma=0.1,
        seed=3,
    ) as server:
        yield server


@contextmanager
def serving_with_worker(directory: Path, sim: SimServer, *, worker: bool = True) -> Iterator[LiveApp]:
    """The app with its job worker, one named backend (the sim server, one request in flight) and a short lease
    (a running job notices a cancel within a second); an admin with a password and a token."""
    directory.mkdir(parents=True, exist_ok=True)
    settings = make_settings(
        f"sqlite:///{directory / 'sprout.db'}",
        backends={"sim": sim.backend_settings(max_in_flight=1).model_dump()},
        default_backend="sim",
        job_lease_seconds=4.0,
        worker_enabled=worker,
        finetune_min_examples=1,
    )
    with app_server.serving(settings) as served:
        with transaction(served.app.state.sessions) as session:
            admin = create_user(session, f"admin-{uuid.uuid4().hex[:6]}", Role.admin, PASSWORD)
            secret, _ = create_token(session, admin, name="jobs page tests")
            admin_name = admin.name
        with httpx.Client(
            base_url=served.base_url,
            headers={"Authorization": f"Bearer {secret}"},
            trust_env=False,
            timeout=30.0,
        ) as client:
            live = LiveApp(served.base_url, served.app, client)
            live.admin_name = admin_name  # type: ignore[attr-defined]
            yield live


def dataset_with_seeds(app: LiveApp, name: str) -> int:
    dataset_id = app.add_dataset(name)
    ok(
        app.admin.post(
            f"/v1/datasets/{dataset_id}/seeds", files={"file": ("seeds.jsonl", SEEDS.read_bytes())}
        )
    )
    return dataset_id


def queue(app: LiveApp, dataset_id: int, count: int) -> int:
    body = {"count": count, "tasks_per_prompt": 2}
    return int(ok(app.admin.post(f"/v1/datasets/{dataset_id}/generations", json=body))["id"])


def job_row(page: Page, job_id: int) -> Locator:
    return page.locator(f'#job-rows tr[data-key="generation:{job_id}"]')


def polls(page: Page) -> int:
    return int(page.locator("#jobs").get_attribute("data-polls") or 0)


def test_progress_rises_over_polls_to_100_percent_without_a_reload(
    tmp_path: Path, sim: SimServer, open_page: OpenPage
) -> None:
    with serving_with_worker(tmp_path / "app", sim) as app:
        dataset_id = dataset_with_seeds(app, MARKUP_NAME)
        page, _watch = open_page(app)
        log_in(page, app.admin_name, next_path="/ui/jobs")  # type: ignore[attr-defined]
        expect(page.locator("header nav a[href='/ui/jobs']")).to_be_visible()
        page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads

        job_id = queue(app, dataset_id, 30)
        row = job_row(page, job_id)
        expect(row).to_be_visible(timeout=15_000)
        expect(row.locator(".dataset a")).to_have_text(MARKUP_NAME)  # a name made of markup stays text

        seen: list[tuple[int, float, str]] = []  # (poll number, fraction shown, status shown)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            fraction = row.locator("progress").get_attribute("data-fraction") or "0"
            status = row.locator(".status").inner_text()
            seen.append((polls(page), float(fraction), status))
            if status == "succeeded":
                break
            page.wait_for_timeout(200)
        fractions = [f for _, f, _ in seen]
        assert seen[-1][2] == "succeeded", seen[-1]
        assert fractions == sorted(fractions), "the progress went back"
        rising = sorted({f for f in fractions if 0 < f < 1})
        assert len(rising) >= 2, f"fewer than two intermediate figures over the polls: {seen}"
        assert len({p for p, f, _ in seen if 0 < f < 1}) >= 2, f"one poll showed every figure: {seen}"
        assert "running" in {s for _, _, s in seen}

        bar = row.locator("progress")
        assert bar.get_attribute("data-fraction") == "1"
        assert float(bar.evaluate("b => b.value")) >= float(bar.evaluate("b => b.max")) == 30
        expect(row.locator(".figures")).to_contain_text("(100%)")
        expect(row.locator("button.cancel")).to_be_hidden()
        assert page.evaluate("window.__sameDocument") is True  # no reload
        assert page.evaluate("window.__xss") is None and page.locator("#jobs img").count() == 0
        job = ok(app.admin.get(f"/v1/generations/{job_id}"))
        assert job["status"] == "succeeded" and job["counters"]["accepted"] >= 30
        expect(row.locator(".attempt")).to_have_text("1")
        expect(row.locator(".tokens")).to_have_text(re.compile(r"^[\d,]+$"))


def test_cancel_a_running_job_and_a_reviewer_has_no_cancel_button(
    tmp_path: Path, sim: SimServer, open_page: OpenPage
) -> None:
    with serving_with_worker(tmp_path / "app", sim) as app:
        dataset_id = dataset_with_seeds(app, "long")
        reviewer, _ = app.add_user(Role.reviewer)
        job_id = queue(app, dataset_id, 5000)

        watcher, _ = open_page(app)
        log_in(watcher, reviewer, next_path="/ui/jobs")
        row = job_row(watcher, job_id)
        expect(row.locator(".status")).to_have_text("running", timeout=15_000)
        expect(row.locator(".worker")).not_to_be_empty()
        assert watcher.locator("button.cancel:visible").count() == 0

        admin, admin_watch = open_page(app)
        dialogs: list[str] = []

        def accept(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.accept()

        admin_watch.on_dialog = accept
        log_in(admin, app.admin_name, next_path="/ui/jobs")  # type: ignore[attr-defined]
        admin_row = job_row(admin, job_id)
        expect(admin_row.locator(".status")).to_have_text("running", timeout=15_000)
        with admin.expect_request(
            lambda r: r.method == "POST" and r.url.endswith(f"/v1/generations/{job_id}/cancel")
        ) as sent:
            admin_row.locator("button.cancel").click()
        assert sent.value.header_value("x-csrf-token"), "the cancel went without the session's CSRF token"
        assert dialogs and f"#{job_id}" in dialogs[0]
        expect(admin_row.locator(".status")).to_have_text("cancelled", timeout=20_000)
        expect(admin_row.locator("button.cancel")).to_be_hidden()
        # The reviewer's page follows on its own.
        expect(row.locator(".status")).to_have_text("cancelled", timeout=10_000)
        assert ok(app.admin.get(f"/v1/generations/{job_id}"))["status"] == "cancelled"

        # Filters apply without a reload and stay in the address.
        watcher.select_option("select[name=kind]", "fine_tune")
        expect(row).to_have_count(0)
        expect(watcher.locator("#job-rows tr.empty")).to_be_visible()
        assert "kind=fine_tune" in watcher.url
        watcher.select_option("select[name=kind]", "")
        watcher.select_option("select[name=status]", "cancelled")
        expect(row).to_be_visible()
        watcher.select_option("select[name=status]", "active")
        expect(row).to_have_count(0)
        watcher.select_option("select[name=status]", "")
        expect(row).to_be_visible()


def test_a_fine_tuning_job_shows_and_cancels_and_polling_pauses_while_the_tab_is_hidden(
    tmp_path: Path, sim: SimServer, open_page: OpenPage
) -> None:
    """No worker here: the fine-tuning job stays queued (validating_files) until the page cancels it through the
    OpenAI-compatible cancel route."""
    with serving_with_worker(tmp_path / "app", sim, worker=False) as app:
        examples = "\n".join(
            json.dumps(
                {"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]}
            )
            for w in ("yes", "no", "maybe")
        )
        upload = ok(
            app.admin.post(
                "/v1/files", files={"file": ("train.jsonl", examples.encode())}, data={"purpose": "fine-tune"}
            )
        )
        public_id = ok(
            app.admin.post(
                "/v1/fine_tuning/jobs", json={"model": DEFAULT_MODEL_NAME, "training_file": upload["id"]}
            )
        )["id"]
        page, watch = open_page(app)
        watch.on_dialog = lambda dialog: dialog.accept()
        log_in(page, app.admin_name, next_path="/ui/jobs")  # type: ignore[attr-defined]
        expect(page.locator("#jobs")).to_have_attribute("data-polls", re.compile(r"^[1-9]"))
        row = page.locator("#job-rows tr[data-kind=fine_tune]")
        expect(row.locator(".job-name a")).to_have_text(public_id)
        expect(row.locator(".status")).to_have_text("queued")
        expect(row.locator(".stage")).to_contain_text("validating_files")
        row.locator("button.cancel").click()
        expect(row.locator(".status")).to_have_text("cancelled")
        assert ok(app.admin.get(f"/v1/fine_tuning/jobs/{public_id}"))["status"] == "cancelled"
        asked: list[float] = []

        def count(request: Request) -> None:
            if "/v1/jobs?" in request.url:
                asked.append(time.monotonic())

        page.on("request", count)
        page.wait_for_timeout(2500)  # (Playwright delivers events while it is called, not in time.sleep)
        assert asked, "the page does not poll"

        set_hidden = """hidden => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
            Object.defineProperty(document, "visibilityState", { configurable: true, get: () => hidden ? "hidden" : "visible" });
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
        page.evaluate(set_hidden, True)
        expect(page.locator("#jobs")).to_have_attribute("data-polling", "paused")
        page.wait_for_timeout(500)  # a poll already sent may still land
        hidden_at = time.monotonic()
        page.wait_for_timeout(4500)  # two polling periods and more
        assert [t for t in asked if t > hidden_at] == [], "the page polled while hidden"

        shown_at = time.monotonic()
        page.evaluate(set_hidden, False)
        expect(page.locator("#jobs")).to_have_attribute("data-polling", "on")
        deadline = time.monotonic() + 5
        while not [t for t in asked if t > shown_at] and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        resumed = [t for t in asked if t > shown_at]
        assert resumed and resumed[0] - shown_at < 1.5, "polling did not resume at once"
