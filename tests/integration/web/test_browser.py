"""The reviewer UI in a real Chromium (Playwright) against the real app over HTTP, each test on a fresh database.

Checked: logging in through the form; reviewing with the keyboard only (approve, reject with a reason, edit in
place, previous/next, undo), with the outcome read back from the database; that model output, a dataset name,
a reject note and a diff holding markup show as text on every page and never run (under a strict CSP); that
`j` past the end picks up items freed meanwhile; that an open review page keeps renewing its leases so nobody
else can take its items; that a decision made after the session ended is kept and sent after logging in
again; the admin's bulk action over a filter query; and a screenshot of the review page saved as an artifact.

Every page is watched: an uncaught script error, a console error (CSP violations land there) or an unexpected
dialog fails the test.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect
from sqlalchemy import delete, select

from app.auth.models import WebSession
from app.auth.roles import Role
from app.core.db import transaction, utc_now
from app.review.models import ReviewClaim
from tests.support.browser import PASSWORD, LiveApp, PageWatch, artifact_dir, log_in, ok, submit_login_form

pytestmark = [pytest.mark.slow, pytest.mark.browser]

OpenPage = Callable[[LiveApp], tuple[Page, PageWatch]]
StartApp = Callable[..., LiveApp]

# Distinct instructions (different words, not just numbers): the near-duplicate index keeps them all pending.
PLAIN_RECORDS = [
    {
        "instruction": "Summarize the history of Roman aqueducts in three sentences",
        "input": "",
        "output": "They carried water.",
    },
    {"instruction": "Translate the greeting below into French", "input": "Good morning", "output": "Bonjour"},
    {
        "instruction": "List three uses of baking soda around the house",
        "input": "",
        "output": "Cleaning, baking, deodorizing.",
    },
    {
        "instruction": "Explain why the sky looks blue during the day",
        "input": "",
        "output": "Rayleigh scattering.",
    },
    {
        "instruction": "Write a haiku about autumn leaves falling slowly",
        "input": "",
        "output": "Red leaves drift down.",
    },
    {"instruction": "Give a synonym for the adjective happy", "input": "", "output": "Joyful"},
]

SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=1">'
DATASET_MARKUP = "<img src=x onerror=window.__xss=1>"
NOTE_MARKUP = f'<b onmouseover="window.__xss=1">bold</b>{SCRIPT}'
EDIT_MARKUP = f"Edited: {IMG} then {SCRIPT} again"
# The second instruction is close to the first (ROUGE-L about 0.65: kept, with the first as its nearest
# neighbour), so the review page and the item page show a diff made of markup.
MARKUP_RECORDS = [
    {
        "instruction": f"Explain what the tag {SCRIPT} does when a browser loads the page",
        "input": IMG,
        "output": f"It runs {SCRIPT} and sets a flag.",
    },
    {
        "instruction": f"Tell me what the tag {SCRIPT} does when a search crawler reads this document",
        "input": "",
        "output": f"A crawler ignores {IMG} entirely.",
    },
    {
        "instruction": "Describe the weather of a rainy afternoon in Lisbon",
        "input": "",
        "output": f"Grey skies {IMG} and wet streets.",
    },
]


# --- helpers ------------------------------------------------------------------------------------------------------


def review_path(dataset_id: int) -> str:
    return f"/ui/datasets/{dataset_id}/review"


def shown_item(page: Page) -> int:
    """The id of the item on the review card (waits for the card)."""
    expect(page.locator("#card")).to_be_visible()
    match = re.match(r"#(\d+) ", page.locator("#item-id").inner_text())
    assert match, page.locator("#item-id").inner_text()
    return int(match.group(1))


def expect_item(page: Page, item_id: int, state: str | None = None) -> None:
    expect(page.locator("#item-id")).to_have_text(re.compile(rf"^#{item_id} "))
    if state is not None:
        expect(page.locator("#item-state")).to_have_text(state)


def next_item_after(page: Page, item_id: int) -> int:
    """Wait until the card leaves `item_id`; the id it shows then."""
    expect(page.locator("#item-id")).not_to_have_text(re.compile(rf"^#{item_id} "))
    return shown_item(page)


def go_to_item(page: Page, item_id: int) -> None:
    """Press j until the card shows `item_id` (the page's order is the queue's, not ours)."""
    for _ in range(20):
        if shown_item(page) == item_id:
            return
        before = shown_item(page)
        page.keyboard.press("j")
        next_item_after(page, before)
    raise AssertionError(f"item {item_id} never came up on the review page")


class HeldRequests:
    """Requests to a URL held back (routed, not answered) until `release_and_settle`."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.routes: list[Route] = []

    def release_and_settle(self) -> None:
        """Let every held request through, wait for the answers, and give the page's scripts a moment to act."""
        deadline = time.monotonic() + 10
        while not self.routes and time.monotonic() < deadline:
            self.page.wait_for_timeout(50)
        assert self.routes, "no request was held"
        for route in self.routes:
            with self.page.expect_response(route.request.url):
                route.continue_()
        self.page.wait_for_timeout(300)


@contextmanager
def holding_requests(page: Page, url: str) -> Iterator[HeldRequests]:
    held = HeldRequests(page)
    page.route(url, lambda route: held.routes.append(route))
    try:
        yield held
    finally:
        page.unroute(url)


def user_id(app: LiveApp, token: str) -> int:
    with app.client(token) as client:
        return int(client.get("/v1/me").json()["id"])


def live_claims(app: LiveApp, holder: int) -> set[int]:
    """Items `holder` holds right now (lease_until after the database's now)."""
    with app.sessions() as session:
        rows = session.scalars(
            select(ReviewClaim.item_id).where(
                ReviewClaim.user_id == holder, ReviewClaim.lease_until > utc_now()
            )
        )
        return set(rows)


def claim_as(app: LiveApp, token: str, dataset_id: int) -> list[int]:
    with app.client(token) as client:
        response = client.post(f"/v1/datasets/{dataset_id}/review/claim", json={"n": 50})
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]


def assert_no_script_ran(page: Page) -> None:
    assert page.evaluate("() => typeof window.__xss") == "undefined", "a script from the data ran"
    injected = page.evaluate(
        "() => document.querySelectorAll('img, script:not([src]), [onerror], [onmouseover], b').length"
    )
    assert injected == 0, "markup from the data became elements of the page"


def visit(page: Page, path: str) -> str:
    """Open a page of the UI; check its status and Content-Security-Policy; return its visible text."""
    response = page.goto(path)
    assert response is not None and response.status == 200, f"{path}: {response and response.status}"
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "default-src 'none'" in policy, f"{path}: CSP is {policy!r}"
    assert_no_script_ran(page)
    return page.locator("body").inner_text()


# --- tests --------------------------------------------------------------------------------------------------------


def test_login_form_rejects_a_wrong_password_and_lands_on_the_datasets(
    start_app: StartApp, open_page: OpenPage
) -> None:
    app = start_app()
    app.add_dataset("Login check dataset")
    name, _ = app.add_user(Role.reviewer)
    page, watch = open_page(app)
    watch.allow_console(r"status of 401")  # the form's answer to a wrong password is a 401 page

    response = page.goto("/ui")
    assert response is not None and response.status == 401  # no session: the login form
    expect(page.locator("form[action='/login']")).to_be_visible()

    submit_login_form(page, name, "not the password at all")
    expect(page.locator("p.error[role=alert]")).to_have_text("wrong name or password")
    assert "/login" in page.url
    expect(page.locator("input[name=name]")).to_have_value(name)
    assert not [c for c in page.context.cookies() if c["name"] == "sprout_session"]

    submit_login_form(page, name, PASSWORD)
    page.wait_for_url(re.compile(r"/ui$"))
    expect(page.locator("h1")).to_have_text("Datasets")
    expect(page.locator("table.grid")).to_contain_text("Login check dataset")
    expect(page.locator("header .who")).to_contain_text(name)
    cookie = next(c for c in page.context.cookies() if c["name"] == "sprout_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    watch.assert_clean()


def test_keyboard_review_approves_rejects_edits_undoes_and_the_database_agrees(
    start_app: StartApp, open_page: OpenPage
) -> None:
    app = start_app()
    dataset = app.add_dataset("Keyboard review")
    app.import_items(dataset, PLAIN_RECORDS)
    originals = {item["id"]: item for item in app.items(dataset)}
    name, token = app.add_user(Role.reviewer)
    page, watch = open_page(app)
    log_in(page, name, next_path=review_path(dataset))
    assert page.url.endswith(review_path(dataset))
    keys = page.keyboard

    approved = shown_item(page)
    keys.press("a")
    rejected = next_item_after(page, approved)

    keys.press("r")
    expect(page.locator("#reject-panel")).to_be_visible()
    keys.press("2")
    chosen = page.locator("#reasons li:nth-child(2) button")
    expect(chosen).to_have_class("chosen")
    reason = chosen.inner_text()
    keys.press("Enter")
    edited = next_item_after(page, rejected)

    keys.press("e")
    expect(page.locator("#e-output")).to_be_visible()
    expect(page.locator("#e-instruction")).to_be_focused()
    keys.press("Tab")
    keys.press("Tab")
    expect(page.locator("#e-output")).to_be_focused()
    keys.press("Control+A")
    keys.type("A corrected answer, typed by the reviewer.")
    keys.press("Control+Enter")
    undone = next_item_after(page, edited)

    # The fourth decision leaves fewer than three open items: the page claims a refill in the background.
    # Its answer is held back until the reviewer went back with k, and must not pull them forward again.
    with holding_requests(page, "**/review/claim") as refill:
        keys.press("a")
        moved_on = next_item_after(page, undone)
        keys.press("k")
        expect_item(page, undone, "approved")
        refill.release_and_settle()
    expect_item(page, undone, "approved")
    keys.press("u")
    expect_item(page, undone, "pending")
    expect(page.locator("#message")).to_contain_text(f"Undone: item #{undone}")
    keys.press("j")
    expect_item(page, moved_on, "pending")
    keys.press("a")
    next_item_after(page, moved_on)
    expect(page.locator("#status-line")).to_contain_text("4 decided on this page")
    watch.assert_clean()

    statuses = {item["id"]: item["status"] for item in app.items(dataset)}
    expected = dict.fromkeys(originals, "pending")
    expected.update({approved: "approved", rejected: "rejected", edited: "approved", moved_on: "approved"})
    assert statuses == expected

    reject_event = app.events(rejected)[-1]
    assert (reject_event["action"], reject_event["reason"], reject_event["actor"]) == ("reject", reason, name)

    item = app.item(edited)
    before = originals[edited]
    assert item["output"] == "A corrected answer, typed by the reviewer."
    assert (item["instruction"], item["input"]) == (before["instruction"], before["input"])
    assert item["original"] == {f: before[f] for f in ("instruction", "input", "output")}
    edit_event = app.events(edited)[-1]
    assert edit_event["action"] == "approve"
    assert edit_event["before"]["output"] == before["output"]
    assert edit_event["after"]["output"] == "A corrected answer, typed by the reviewer."

    assert [e["action"] for e in app.events(undone)] == ["approve", "undo"]
    assert app.item(undone)["original"] is None
    assert undone in live_claims(app, user_id(app, token))  # the reviewer's again, ready for a new decision


def test_markup_in_data_is_shown_as_text_and_never_runs(start_app: StartApp, open_page: OpenPage) -> None:
    app = start_app()
    dataset = app.add_dataset(DATASET_MARKUP)
    app.import_items(dataset, MARKUP_RECORDS)
    by_instruction = {item["instruction"]: item for item in app.items(dataset)}
    first, neighbour, plain = (by_instruction[r["instruction"]] for r in MARKUP_RECORDS)
    assert neighbour["nearest"] == {
        "kind": "item",
        "id": first["id"],
        "rouge_l": pytest.approx(0.65, abs=0.05),
    }
    name, _ = app.add_user(Role.admin)
    page, watch = open_page(app)
    log_in(page, name)

    text = visit(page, "/ui")
    assert DATASET_MARKUP in text

    # The review page: fields, the neighbour's diff; then an edit and a reject note, both made of markup.
    visit(page, review_path(dataset))
    go_to_item(page, neighbour["id"])
    expect(page.locator("#f-instruction")).to_have_text(neighbour["instruction"])
    expect(page.locator("#neighbour")).to_be_visible()
    expect(page.locator("#n-diff")).to_contain_text(SCRIPT)
    assert page.locator("#n-diff del, #n-diff ins").count() > 0  # the difference is highlighted
    assert_no_script_ran(page)

    go_to_item(page, first["id"])
    for field in ("instruction", "input", "output"):
        expect(page.locator(f"#f-{field}")).to_have_text(first[field])
    assert_no_script_ran(page)
    page.keyboard.press("e")
    page.locator("#e-output").fill(EDIT_MARKUP)
    page.keyboard.press("Control+Enter")
    next_item_after(page, first["id"])

    go_to_item(page, plain["id"])
    page.keyboard.press("r")
    page.keyboard.press("1")
    page.locator("#reject-note").fill(NOTE_MARKUP)
    page.keyboard.press("Enter")
    next_item_after(page, plain["id"])
    assert_no_script_ran(page)

    assert app.item(first["id"])["output"] == EDIT_MARKUP
    assert app.events(plain["id"])[-1]["note"] == NOTE_MARKUP

    text = visit(page, f"/ui/datasets/{dataset}")
    assert DATASET_MARKUP in text
    text = visit(page, f"/ui/datasets/{dataset}/queue")
    assert DATASET_MARKUP in text and SCRIPT in text
    text = visit(page, f"/ui/datasets/{dataset}/queue?q=window")
    assert neighbour["instruction"] in text

    text = visit(page, f"/ui/items/{first['id']}")
    assert first["instruction"] in text and first["input"] in text and EDIT_MARKUP in text
    assert IMG in page.locator("ol.history").inner_text()  # the edit's diff, with the markup it added
    assert page.locator("ol.history ins").count() > 0
    text = visit(page, f"/ui/items/{neighbour['id']}")
    assert neighbour["instruction"] in text
    expect(page.locator("h2", has_text="Nearest neighbour")).to_be_visible()
    expect(page.locator("p.text .diff")).to_contain_text(SCRIPT)
    text = visit(page, f"/ui/items/{plain['id']}")
    assert NOTE_MARKUP in text
    watch.assert_clean()
    assert not watch.dialogs


def test_next_at_the_end_shows_the_first_item_that_became_free_meanwhile(
    start_app: StartApp, open_page: OpenPage
) -> None:
    app = start_app()
    dataset = app.add_dataset("Items freed later")
    app.import_items(dataset, PLAIN_RECORDS[:3])
    _, other_token = app.add_user(Role.reviewer)
    with app.client(other_token) as other:  # another reviewer holds two of the three items
        held = ok(other.post(f"/v1/datasets/{dataset}/review/claim", json={"n": 2}))["items"]
    name, _ = app.add_user(Role.reviewer)
    page, watch = open_page(app)
    log_in(page, name, next_path=review_path(dataset))
    only = shown_item(page)
    expect(page.locator("#status-line")).to_contain_text("Item 1 of 1")
    with page.expect_response(lambda r: r.url.endswith("/review/claim")):  # the page's refill finds nothing
        page.keyboard.press("a")
    page.wait_for_timeout(300)  # and its script is done with that answer
    expect_item(page, only, "approved")  # the decided item stays on the card

    with app.client(other_token) as other:  # the other reviewer gives their items back
        ok(other.post(f"/v1/datasets/{dataset}/review/release", json={"item_ids": [i["id"] for i in held]}))
    page.keyboard.press("j")
    expect(page.locator("#status-line")).to_contain_text("Item 2 of 3 · 2 still to decide")
    expect(page.locator("#item-state")).to_have_text("pending")
    watch.assert_clean()


def test_open_review_page_renews_its_leases_and_keeps_others_out(
    start_app: StartApp, open_page: OpenPage
) -> None:
    lease = 3.0  # the page renews every lease / 3 = 1 s
    app = start_app(review_lease_seconds=lease)
    dataset = app.add_dataset("Lease renewal")
    app.import_items(dataset, PLAIN_RECORDS[:4])
    every_item = {item["id"] for item in app.items(dataset)}
    name, token = app.add_user(Role.reviewer)
    reviewer = user_id(app, token)
    _, other_token = app.add_user(Role.reviewer)
    page, watch = open_page(app)
    log_in(page, name, next_path=review_path(dataset))
    shown_item(page)
    opened = time.monotonic()
    assert live_claims(app, reviewer) == every_item

    renewals = "() => Number(document.getElementById('review').dataset.renewals || 0)"
    # Several lease periods: without renewals every claim would have lapsed by now.
    page.wait_for_function(f"() => ({renewals})() >= 7", timeout=20_000)
    assert time.monotonic() - opened > 2 * lease
    assert claim_as(app, other_token, dataset) == []
    assert live_claims(app, reviewer) == every_item
    assert page.locator("main#review").get_attribute("data-lease-until")
    count = page.evaluate(renewals)
    page.wait_for_function(f"() => ({renewals})() > {count}", timeout=10_000)
    assert claim_as(app, other_token, dataset) == []
    watch.assert_clean()

    # Once the page is gone its leases lapse and the items go back to the pool: the check above could fail.
    page.context.close()
    deadline = time.monotonic() + 4 * lease
    taken: list[int] = []
    while not taken and time.monotonic() < deadline:
        time.sleep(0.5)
        taken = claim_as(app, other_token, dataset)
    assert set(taken) == every_item


def test_decision_after_the_session_ended_is_kept_and_sent_after_logging_in_again(
    start_app: StartApp, open_page: OpenPage
) -> None:
    app = start_app(review_lease_seconds=3)  # renewals every second: they fail too once the session is gone
    dataset = app.add_dataset("Session expiry")
    app.import_items(dataset, PLAIN_RECORDS[:3])
    name, token = app.add_user(Role.reviewer)
    page, watch = open_page(app)
    watch.allow_console(r"status of 401")  # the decision and the renewals that meet the ended session
    log_in(page, name, next_path=review_path(dataset))
    item = shown_item(page)

    reviewer = user_id(app, token)
    with transaction(app.sessions) as session:
        ended = session.execute(delete(WebSession).where(WebSession.user_id == reviewer))
        assert ended.rowcount == 1
    page.keyboard.press("a")
    message = page.locator("#message")
    expect(message).to_contain_text("Your session ended. Your decision is kept")
    assert app.item(item)["status"] == "pending"
    # A renewal failing afterwards still says the decision is kept (and still offers the login link).
    page.wait_for_event("console", predicate=lambda m: "status of 401" in m.text, timeout=5_000)
    expect(message).to_contain_text("Your session ended. Your decision is kept")

    link = message.locator("a")
    expect(link).to_have_attribute("href", re.compile(r"^/login\?next="))
    link.click()
    page.wait_for_url(re.compile(r"/login\?next="))
    submit_login_form(page, name, PASSWORD)
    page.wait_for_url(re.compile(re.escape(review_path(dataset)) + "$"))
    expect(page.locator("#message")).to_contain_text("Sent 1 decision(s) kept while you were logged out")

    after = app.item(item)
    assert after["status"] == "approved"
    assert [(e["action"], e["actor"]) for e in app.events(item)] == [("approve", name)]
    watch.assert_clean()


def test_admin_bulk_action_from_the_queue_covers_the_whole_filter_query(
    start_app: StartApp, open_page: OpenPage
) -> None:
    app = start_app()
    dataset = app.add_dataset("Bulk from the queue")
    app.import_items(dataset, PLAIN_RECORDS)
    name, _ = app.add_user(Role.admin)
    page, watch = open_page(app)
    confirmations: list[str] = []

    def confirm(dialog: Any) -> None:
        confirmations.append(dialog.message)
        dialog.accept()

    watch.on_dialog = confirm
    log_in(page, name)
    page.goto(f"/ui/datasets/{dataset}/queue")
    page.fill("form.filters input[name=q]", "the")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    matching = {
        i["id"]
        for i in app.items(dataset)
        if re.search(r"\bthe\b", i["instruction"] + i["input"] + i["output"])
    }
    assert len(matching) == len(page.locator("table.items tbody tr[data-item-id]").all())

    page.click("details.bulk summary")
    page.select_option("#bulk-form select[name=action]", "reject")
    page.select_option("#bulk-form select[name=reason]", index=0)
    page.fill("#bulk-form input[name=note]", "off topic for this set")
    page.click("#bulk-form button[type=submit]")
    expect(page.locator("#bulk-result")).to_have_text(
        f"reject: {len(matching)} of {len(matching)} item(s) changed."
    )
    assert confirmations == [f"reject {len(matching)} item(s) matching these filters?"]

    statuses = {item["id"]: item["status"] for item in app.items(dataset)}
    assert {i for i, s in statuses.items() if s == "rejected"} == matching
    assert all(s == "pending" for i, s in statuses.items() if i not in matching)
    watch.assert_clean()


def test_review_page_screenshot_is_saved_as_an_artifact(
    start_app: StartApp, open_page: OpenPage, tmp_path: Any
) -> None:
    app = start_app()
    dataset = app.add_dataset("Screenshot")
    app.import_items(dataset, MARKUP_RECORDS[:2] + PLAIN_RECORDS[:2])
    name, _ = app.add_user(Role.reviewer)
    page, watch = open_page(app)
    log_in(page, name, next_path=review_path(dataset))
    go_to_item(page, next(i["id"] for i in app.items(dataset) if i["nearest"]))
    expect(page.locator("#neighbour")).to_be_visible()

    path = artifact_dir(tmp_path) / "review-page.png"
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 1000 and height >= 600
    watch.assert_clean()
