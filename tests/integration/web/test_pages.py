"""The reviewer UI's pages as HTML: who sees what, untrusted text escaped everywhere, strict security headers, and
pages that ask for a login (401) instead of failing. Real browsers drive them in test_browser.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from app.auth.roles import Role
from tests.support.data import alpaca_jsonl, spread_instructions
from tests.support.service import bearer, make_settings, new_user_token, running_service

MARKUP = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'
NAME_MARKUP = "<img src=x onerror=window.__xss=1><b>name"  # a dataset name may not hold "/"


@pytest.fixture
def client(database_url: str):
    with running_service(make_settings(database_url, worker_enabled=False)) as client:
        yield client


def _dataset_with_items(client, name: str = "pages") -> int:  # noqa: ANN001
    dataset_id = client.post("/v1/datasets", json={"name": name}).json()["id"]
    rows = [
        {
            "instruction": f"Explain {MARKUP} to a child in simple words.",
            "input": MARKUP,
            "output": f"It is {MARKUP}",
        },
        {
            "instruction": "Describe the water cycle in three sentences for a class.",
            "input": "",
            "output": "Rain.",
        },
        {
            "instruction": "Describe the water cycle in three sentences for a school class.",
            "input": "",
            "output": "Again.",
        },
        {"instruction": "翻译成英文：今天天气很好", "input": "", "output": "The weather is nice today."},
    ]
    data = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
    imported = client.post(
        f"/v1/datasets/{dataset_id}/items/import", files={"file": ("d.jsonl", data)}
    ).json()
    assert imported["accepted"] == 3 and imported["duplicates"] == 1
    return dataset_id


def _assert_escaped(html: str) -> None:
    assert "<script>window" not in html and "<img src=x" not in html  # never as markup...
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html  # ...always as visible text


def test_untrusted_text_is_escaped_on_every_page(client) -> None:  # noqa: ANN001
    dataset_id = _dataset_with_items(client, name=NAME_MARKUP)
    items = client.get(f"/v1/datasets/{dataset_id}/items").json()["data"]
    marked = next(i for i in items if "script" in i["instruction"])
    reviewer = new_user_token(client, Role.reviewer)
    edited = client.post(
        f"/v1/items/{marked['id']}/review",
        json={
            "decision": "approve",
            "version": marked["version"],
            "note": MARKUP,
            "edits": {"output": f"new {MARKUP}"},
        },
        headers=bearer(reviewer),
    )
    assert edited.status_code == 200, edited.text
    duplicate = next(i for i in items if i["filter_reason"] == "near_duplicate")
    for path in (
        "/ui",
        f"/ui/datasets/{dataset_id}",
        f"/ui/datasets/{dataset_id}/queue?status=approved",
        f"/ui/datasets/{dataset_id}/queue?q={MARKUP}",
        f"/ui/datasets/{dataset_id}/review",
        f"/ui/items/{marked['id']}",  # the edit's diff, the note, the history
        f"/ui/items/{duplicate['id']}",  # the neighbour's diff
    ):
        page = client.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html")
        if "/queue" in path or path.endswith(f"/items/{marked['id']}"):  # where the marked item's text shows
            _assert_escaped(page.text)
        policy = page.headers["content-security-policy"]
        assert (
            "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
        )
        assert (
            page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
        )
    assert (
        "<ins>school </ins>" in client.get(f"/ui/items/{duplicate['id']}").text
    )  # the difference, highlighted
    for path in ("/ui", f"/ui/datasets/{dataset_id}", f"/ui/datasets/{dataset_id}/review"):
        page = client.get(path).text
        assert (
            "<img src=x onerror=window" not in page
            and "&lt;img src=x onerror=window.__xss=1&gt;&lt;b&gt;name" in page
        )


def test_a_page_without_a_session_asks_for_a_login_and_comes_back(client) -> None:  # noqa: ANN001
    dataset_id = _dataset_with_items(client)
    anonymous = client.get(f"/ui/datasets/{dataset_id}/queue?status=filtered", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert '<form method="post" action="/login">' in anonymous.text
    next_url = re.search(r'name="next" value="([^"]*)"', anonymous.text).group(1)  # type: ignore[union-attr]
    assert next_url.replace("&amp;", "&") == f"/ui/datasets/{dataset_id}/queue?status=filtered"
    assert client.get("/docs", headers={"Authorization": ""}).status_code == 401
    assert client.get("/openapi.json", headers={"Authorization": ""}).status_code == 401
    assert client.get("/openapi.json").json()["info"]["title"] == "Sprout"


def test_each_role_sees_its_own_actions(client) -> None:  # noqa: ANN001
    dataset_id = _dataset_with_items(client)
    admin = client.get(f"/ui/datasets/{dataset_id}/queue?status=filtered").text
    assert 'id="bulk-form"' in admin and "Restore" in admin
    reviewer = client.get(
        f"/ui/datasets/{dataset_id}/queue?status=filtered",
        headers=bearer(new_user_token(client, Role.reviewer)),
    ).text
    assert 'id="bulk-form"' not in reviewer and "Restore" in reviewer
    service = bearer(new_user_token(client, Role.service))
    listing = client.get("/ui", headers=service).text
    assert f"/ui/datasets/{dataset_id}/queue" in listing and "/review" not in listing
    forbidden = client.get(f"/ui/datasets/{dataset_id}/review", headers=service)
    assert forbidden.status_code == 403 and "Not allowed" in forbidden.text


def test_the_queue_pages_through_a_filter_with_keyset_links(client, shared_data: Path) -> None:  # noqa: ANN001
    dataset_id = _dataset_with_items(client)
    more = alpaca_jsonl(spread_instructions(shared_data, 120))
    client.post(f"/v1/datasets/{dataset_id}/items/import", files={"file": ("more.jsonl", more)})
    pending = client.get(
        f"/v1/datasets/{dataset_id}/items", params={"status": "pending", "count": True}
    ).json()["total"]
    assert pending > 50  # more than one page of the queue
    seen: list[str] = []
    path = f"/ui/datasets/{dataset_id}/queue?status=pending&sort=newest"
    for _ in range(10):
        page = client.get(path)
        assert page.status_code == 200
        seen += re.findall(r'<tr data-item-id="(\d+)"', page.text)
        link = re.search(r'<a href="\?([^"]+)" rel="next">', page.text)
        if link is None:
            break
        query = parse_qs(link.group(1).replace("&amp;", "&"))
        assert query["status"] == ["pending"] and query["sort"] == [
            "newest"
        ]  # the filter travels with the cursor
        path = f"/ui/datasets/{dataset_id}/queue?{link.group(1).replace('&amp;', '&')}"
    assert len(seen) == len(set(seen)) == pending
    assert [int(i) for i in seen] == sorted((int(i) for i in seen), reverse=True)
    assert urlsplit(path).path.endswith("/queue")
    bad = client.get(f"/ui/datasets/{dataset_id}/queue?language=klingon")
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")
    assert client.get("/ui/datasets/999").status_code == 404
