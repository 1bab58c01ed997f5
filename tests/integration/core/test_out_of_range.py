"""Numbers too large for the database's integer columns, anywhere in a request, are a 422 that names the
parameter (or the body), never a 500: SQLite cannot bind them and PostgreSQL cannot compare them."""

from __future__ import annotations

import pytest

from tests.integration.review.conftest import TASKS, import_tasks, new_dataset
from tests.support.service import make_settings, running_service


@pytest.mark.parametrize("number", [2**63, 10**20])
def test_numbers_out_of_range_are_422_naming_the_parameter(database_url: str, number: int) -> None:
    with running_service(make_settings(database_url, worker_enabled=False)) as client:
        dataset_id = new_dataset(client)
        [item] = import_tasks(client, dataset_id, TASKS[:1])
        for path, location in [
            (f"/v1/items/{number}", ["path", "item_id"]),
            (f"/v1/items/{number}/events", ["path", "item_id"]),
            (f"/v1/datasets/{number}", ["path", "dataset_id"]),
            (f"/v1/datasets/{dataset_id}/items?job_id={number}", ["query", "job_id"]),
        ]:
            answer = client.get(path)
            assert answer.status_code == 422, (path, answer.text)
            assert answer.json()["detail"][0]["loc"] == location
        for path, body in [
            (f"/v1/datasets/{dataset_id}/review/release", {"item_ids": [number]}),
            (f"/v1/datasets/{dataset_id}/review/claim", {"n": 5, "filters": {"job_id": number}}),
        ]:
            answer = client.post(path, json=body)
            assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body"], answer.text
        page = client.get(f"/ui/items/{number}")
        assert page.status_code == 422 and "out of range" in page.text
        # Beyond PostgreSQL's `integer` but within SQLite's: not found there, out of range here; never a 500.
        assert client.get(f"/v1/items/{2**31}").status_code in (404, 422)
        # A stale version is just stale, however large; the item is untouched.
        stale = client.post(f"/v1/items/{item['id']}/review", json={"decision": "approve", "version": number})
        assert stale.status_code == 409
        assert client.get(f"/v1/items/{item['id']}").json()["status"] == "pending"
