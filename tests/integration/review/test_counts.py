"""The counts of items by status that the API reports (GET /v1/datasets/{id} and the review progress) are kept by
database triggers on `item` (migration 0003), not counted per request; so are the decisions per reviewer and per
hour (triggers on `review_event`). After every kind of change (imports,
decisions, undo, restore, reopen, disputes, bulk actions) they must equal a fresh GROUP BY over the item table,
on SQLite (row triggers) and on PostgreSQL (statement triggers with transition tables)."""

from __future__ import annotations

from collections import Counter, defaultdict

from sqlalchemy import func, select

from app.generation.models import Item, ItemStatus
from app.review.models import ReviewEvent
from tests.integration.review.conftest import (
    CHINESE_TASKS,
    TASKS,
    alpaca,
    import_records,
    import_tasks,
    item_of,
    new_dataset,
    new_person,
    progress_of,
)
from tests.support.service import all_items, make_settings, running_service

STATUSES = [s.value for s in ItemStatus]


def assert_counts_match_the_table(client, database, dataset_ids: list[int]) -> dict[int, dict[str, int]]:
    """Every dataset's counts, as the API reports them, equal a GROUP BY over its items; those counts."""
    with database() as session:
        rows = session.execute(
            select(Item.dataset_id, Item.status, func.count())
            .where(Item.dataset_id.in_(dataset_ids))
            .group_by(Item.dataset_id, Item.status)
        ).all()
    truth = {d: dict.fromkeys(STATUSES, 0) for d in dataset_ids}
    for dataset_id, status, n in rows:
        truth[dataset_id][ItemStatus(status).value] = n
    for dataset_id in dataset_ids:
        counts = client.get(f"/v1/datasets/{dataset_id}").json()["counts"]
        assert {s: counts[s] for s in STATUSES} == truth[dataset_id], dataset_id
        assert counts["items"] == sum(truth[dataset_id].values())
        progress = progress_of(client, dataset_id)
        assert progress["by_status"] == truth[dataset_id]
        assert_tallies_match_the_events(database, dataset_id, progress)
    return truth


KIND = {"approve": "approved", "reject": "rejected", "respond": "answered", "dispute": "disputed"}


def assert_tallies_match_the_events(database, dataset_id: int, progress: dict) -> None:
    """The trigger-kept tallies behind progress equal what the append-only event log says: decisions per
    reviewer and kind net of undos (edits among them), bulk actions by kind, and decisions per hour."""
    with database() as session:
        events = {
            e.id: e for e in session.scalars(select(ReviewEvent).where(ReviewEvent.dataset_id == dataset_id))
        }
    reviewers: dict[str, Counter] = defaultdict(Counter)
    bulk: Counter = Counter()
    hours: Counter = Counter()
    for event in events.values():
        action = event.action.value
        if event.bulk_id is not None:
            bulk[action] += 1
        elif action == "undo":
            undone = events[event.undoes_id]
            reviewers[event.actor]["undone"] += 1
            reviewers[undone.actor][KIND[undone.action.value]] -= 1
            reviewers[undone.actor]["edited"] -= undone.after is not None
        elif action in KIND:
            reviewers[event.actor][KIND[action]] += 1
            reviewers[event.actor]["edited"] += event.after is not None
            hours[event.created_at.strftime("%Y-%m-%d %H:00")] += 1
    shown = {
        r["user"]: {k: r[k] for k in ("approved", "rejected", "answered", "disputed", "edited", "undone")}
        for r in progress["by_reviewer"]
    }
    expected = {
        user: {k: counts[k] for k in ("approved", "rejected", "answered", "disputed", "edited", "undone")}
        for user, counts in reviewers.items()
        if any(counts.values())
    }
    assert shown == expected
    assert progress["bulk"] == {k: v for k, v in bulk.items() if v}
    assert {hour: n for hour, n in progress["per_hour"] if n} == {h: n for h, n in hours.items() if n}


def test_counts_follow_every_transition(database_url, database) -> None:
    with running_service(make_settings(database_url)) as client:
        main, other = new_dataset(client), new_dataset(client, overlap=2)
        both = [main, other]
        assert assert_counts_match_the_table(client, database, both)[main] == dict.fromkeys(STATUSES, 0)

        # Imports: pending items, and filtered ones (a punctuation-only answer; a repeat is a near-duplicate).
        import_tasks(client, main, TASKS[:12])
        junk = [{"instruction": i, "input": "", "output": "?!"} for i, _ in TASKS[12:18]]
        import_records(client, main, [*junk, *alpaca(TASKS[:2])])
        import_tasks(client, other, CHINESE_TASKS)
        counts = assert_counts_match_the_table(client, database, both)
        assert counts[main]["pending"] == 12 and counts[main]["filtered"] == 8

        # Decisions of one reviewer: approve, reject, edit-and-approve; then an undo.
        reviewer, second = new_person(client), new_person(client)
        items = reviewer.claim(main, 6, sort="oldest")
        reviewer.approve(items[0])
        reviewer.reject(items[1], "duplicate")
        reviewer.approve(items[2], edits={"output": "Reworded."})
        reviewer.approve(items[3])
        assert_counts_match_the_table(client, database, both)
        assert reviewer.undo(main).status_code == 200
        counts = assert_counts_match_the_table(client, database, both)
        assert (counts[main]["approved"], counts[main]["rejected"]) == (2, 1)

        # A reviewer restores a filtered item; an admin reopens a decided one.
        filtered = all_items(client, main, status="filtered")
        restored = reviewer.post(
            f"/v1/items/{filtered[0]['id']}/restore", {"version": filtered[0]["version"]}
        )
        assert restored.status_code == 200, restored.text
        decided = item_of(client, items[0]["id"])
        assert (
            client.post(f"/v1/items/{decided['id']}/reopen", json={"version": decided["version"]}).status_code
            == 200
        )
        assert_counts_match_the_table(client, database, both)

        # Overlap 2 in the other dataset: an answer changes nothing, a disagreement makes a dispute.
        a, b = reviewer.claim(other, 2, sort="oldest"), second.claim(other, 2, sort="oldest")
        reviewer.approve(a[0])
        assert_counts_match_the_table(client, database, both)
        second.approve(b[0])
        reviewer.approve(a[1])
        second.reject(b[1], "unsafe")
        counts = assert_counts_match_the_table(client, database, both)
        assert (counts[other]["disputed"], counts[other]["approved"], counts[other]["pending"]) == (1, 1, 1)

        # Bulk actions: restore the rest of the junk, reject a text query, approve everything left (the dispute too).
        bulk = f"/v1/datasets/{main}/review/bulk"
        restore = client.post(
            bulk, json={"action": "restore", "filters": {"filter_reason": "output_only_punctuation"}}
        )
        assert restore.json()["changed"] == 5
        assert_counts_match_the_table(client, database, both)
        reject = client.post(bulk, json={"action": "reject", "reason": "other", "filters": {"q": "?!"}})
        assert reject.json()["changed"] == 6
        assert_counts_match_the_table(client, database, both)
        for dataset_id in both:
            approve = client.post(
                f"/v1/datasets/{dataset_id}/review/bulk", json={"action": "approve", "filters": {}}
            )
            assert approve.status_code == 200, approve.text
        counts = assert_counts_match_the_table(client, database, both)
        assert counts[main]["pending"] == counts[other]["pending"] == counts[other]["disputed"] == 0

        # Undo of a decision the bulk action left alone; of one it changed (the dispute): refused.
        assert reviewer.undo(main).json()["item"]["id"] == items[2]["id"]
        assert_counts_match_the_table(client, database, both)
        assert second.undo(other).status_code == 409
        assert_counts_match_the_table(client, database, both)
        # And a late import into a dataset that has seen all of this.
        import_tasks(client, main, TASKS[18:])
        counts = assert_counts_match_the_table(client, database, both)
        assert counts[main]["pending"] == len(TASKS) - 18 + 1
