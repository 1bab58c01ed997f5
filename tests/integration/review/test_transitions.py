"""Every transition of the review queue through the HTTP API, on SQLite and PostgreSQL, with items imported through
the import endpoint: claims and leases (renew, release, expiry, a lapsed reviewer's late decision), decisions
(approve, reject with a reason, edit-and-approve, stale versions), undo, restore, reopen, and bulk actions over a
whole query (more than a page and more than a bulk chunk)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime

import pytest
from sqlalchemy import func, select

from app.auth.roles import Role
from app.review import bulk
from app.review.models import ReviewClaim, ReviewEvent
from tests.integration.review.conftest import (
    TASKS,
    admin_of,
    bench_instructions,
    events_of,
    import_records,
    import_tasks,
    item_of,
    new_dataset,
    new_person,
    progress_of,
)
from tests.support.service import all_items, make_settings, running_service

DEFAULT_REASONS = ["wrong_output", "unclear_instruction", "low_quality", "duplicate", "unsafe", "other"]


@pytest.fixture
def client(database_url):
    with running_service(make_settings(database_url)) as client:
        yield client


def ids(items: list[dict]) -> list[int]:
    return [i["id"] for i in items]


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def error_fields(response) -> list[str]:
    """The request fields a 422 names (the last part of each error's location)."""
    assert response.status_code == 422, response.text
    return [str(e["loc"][-1]) for e in response.json()["detail"]]


def assert_stale(response, item_id: int, *, status: str, version: int) -> None:
    """A 409 whose body carries the item as it is now."""
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["detail"] and body["item"]["id"] == item_id
    assert (body["item"]["status"], body["item"]["version"]) == (status, version)


# --- claims and leases ----------------------------------------------------------------------------------------


def test_claims_hand_out_distinct_items_and_give_held_ones_back_first(client) -> None:
    dataset_id = new_dataset(client)
    pending = ids(import_tasks(client, dataset_id))
    alice, bob = new_person(client), new_person(client)

    first = alice.post(f"/v1/datasets/{dataset_id}/review/claim", {"n": 3, "sort": "oldest"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert ids(body["items"]) == pending[:3]
    assert body["lease_until"] is not None and body["lease_seconds"] == 600
    assert body["reject_reasons"] == DEFAULT_REASONS

    # Another reviewer never gets an item somebody holds.
    assert bob.claim_ids(dataset_id, 3, sort="oldest") == pending[3:6]
    # A new claim gives back what the reviewer holds first (a reloaded page gets its items), then new ones.
    assert alice.claim_ids(dataset_id, 5, sort="oldest") == pending[:3] + pending[6:8]
    # ...even in another order, and capped at n.
    assert alice.claim_ids(dataset_id, 2, sort="newest") == [pending[7], pending[6]]

    renewed = alice.renew(dataset_id)
    assert sorted(renewed["item_ids"]) == pending[:3] + pending[6:8]
    assert moment(renewed["lease_until"]) >= moment(body["lease_until"])
    assert alice.renew(dataset_id, pending[3:6])["item_ids"] == []  # bob's items are not alice's to renew

    # Released items go back to the pool; the rest stay held.
    released = alice.post(f"/v1/datasets/{dataset_id}/review/release", {"item_ids": pending[:2]})
    assert released.status_code == 204
    assert sorted(alice.renew(dataset_id)["item_ids"]) == [pending[2], *pending[6:8]]
    assert bob.claim_ids(dataset_id, 5, sort="oldest") == pending[3:6] + pending[:2]

    # Nobody is handed an item twice: every pending item ends up with exactly one holder.
    carol = new_person(client)
    rest = carol.claim_ids(dataset_id, 100, sort="oldest")
    holders = Counter(alice.renew(dataset_id)["item_ids"] + bob.renew(dataset_id)["item_ids"] + rest)
    assert sorted(holders) == pending and set(holders.values()) == {1}
    assert carol.claim_ids(dataset_id, 5, sort="oldest") == rest[:5]  # hers again
    assert new_person(client).claim_ids(dataset_id, 5) == []  # nothing left for anyone else

    assert alice.post("/v1/datasets/999/review/claim", {"n": 1}).status_code == 404
    assert alice.post(f"/v1/datasets/{dataset_id}/review/claim", {"n": 0}).status_code == 422
    service = new_person(client, Role.service)
    assert service.post(f"/v1/datasets/{dataset_id}/review/claim", {"n": 1}).status_code == 403


def test_a_lapsed_lease_returns_items_to_the_pool_but_no_work_is_lost(database_url) -> None:
    lease = 4.0
    with running_service(make_settings(database_url, review_lease_seconds=lease)) as client:
        dataset_id = new_dataset(client)
        pending = import_tasks(client, dataset_id)
        first_ids = ids(pending)
        alice, bob, carol = new_person(client), new_person(client), new_person(client)

        assert alice.claim_ids(dataset_id, 2, sort="oldest") == first_ids[:2]
        bob_items = bob.claim(dataset_id, 3, sort="oldest")
        assert ids(bob_items) == first_ids[2:5]
        time.sleep(2.0)
        assert sorted(alice.renew(dataset_id)["item_ids"]) == first_ids[:2]  # alice renews, bob does not
        time.sleep(lease - 1.5)  # bob's lease has passed, alice's renewed one has 1.5 s left

        # Bob's items are back in the pool (the oldest first), alice's renewed ones are not.
        assert carol.claim_ids(dataset_id, 2, sort="oldest") == first_ids[2:4]

        # Bob comes back: an item somebody took meanwhile is a 409 with the item as it is now...
        taken = bob.decide(bob_items[0])
        assert_stale(taken, first_ids[2], status="pending", version=1)
        # ...but one that nobody took still takes his decision: his work is not lost.
        untaken = bob.approve(bob_items[2])
        assert untaken["decided"] is True and untaken["item"]["status"] == "approved"

        # Once every lease has passed, a claim gives a reviewer back what nobody took from them, first.
        time.sleep(lease + 0.5)
        assert alice.claim_ids(dataset_id, 2, sort="newest") == [first_ids[1], first_ids[0]]
        assert carol.renew(dataset_id)["item_ids"] == first_ids[2:4]  # lapsed, but nobody took them
        assert bob.renew(dataset_id)["item_ids"] == []  # his lapsed claims went to carol or were decided


# --- decisions ------------------------------------------------------------------------------------------------


def test_approve_and_reject_with_a_reason_from_the_datasets_list(client) -> None:
    dataset_id = new_dataset(client)
    import_tasks(client, dataset_id, TASKS[:6])
    reviewer = new_person(client)
    items = reviewer.claim(dataset_id, 6, sort="oldest")

    approved = reviewer.approve(items[0], note="fine")
    assert approved["decided"] is True and approved["item"]["status"] == "approved"
    assert approved["item"]["version"] == 2 and approved["item"]["decided_at"] is not None
    assert approved["item"]["original"] is None

    assert error_fields(reviewer.decide(items[1], "reject")) == ["reason"]
    assert error_fields(reviewer.decide(items[1], "reject", reason="boring")) == ["reason"]
    assert error_fields(reviewer.decide(items[1], "approve", reason="low_quality")) == ["reason"]
    assert item_of(client, items[1]["id"])["status"] == "pending"  # a refused decision changes nothing
    rejected = reviewer.reject(items[1], "wrong_output", note="the answer is <b>wrong</b>")
    assert rejected["item"]["status"] == "rejected"

    [approve_event] = events_of(client, items[0]["id"])
    assert approve_event["action"] == "approve" and approve_event["actor"] == reviewer.name
    assert (approve_event["from_status"], approve_event["to_status"]) == ("pending", "approved")
    assert approve_event["note"] == "fine" and approve_event["version_after"] == 2
    assert approve_event["before"] is None and approve_event["after"] is None
    [reject_event] = events_of(client, items[1]["id"])
    assert reject_event["id"] == rejected["event_id"]
    assert (reject_event["action"], reject_event["reason"]) == ("reject", "wrong_output")
    assert reject_event["note"] == "the answer is <b>wrong</b>"

    # A dataset sets its own reasons; the old ones stop counting, and claims carry the new list.
    reasons = ["off_topic", "too_short"]
    settings_url = f"/v1/datasets/{dataset_id}/review/settings"
    assert reviewer.put(settings_url, {"overlap": 1, "reject_reasons": reasons}).status_code == 403
    put = client.put(settings_url, json={"overlap": 1, "reject_reasons": reasons})
    assert put.status_code == 200 and put.json()["reject_reasons"] == reasons
    assert client.put(settings_url, json={"overlap": 1, "reject_reasons": ["Bad Reason"]}).status_code == 422
    claim = reviewer.post(f"/v1/datasets/{dataset_id}/review/claim", {"n": 10, "sort": "oldest"}).json()
    assert claim["reject_reasons"] == reasons and ids(claim["items"]) == ids(items[2:])
    assert error_fields(reviewer.decide(items[2], "reject", reason="low_quality")) == ["reason"]
    assert reviewer.reject(items[2], "too_short")["item"]["status"] == "rejected"
    progress = progress_of(client, dataset_id)
    assert progress["settings"] == {"overlap": 1, "reject_reasons": reasons}
    assert len(progress["per_hour"]) == 24
    assert progress["last_hour"] == sum(n for _, n in progress["per_hour"]) == 3

    assert reviewer.post("/v1/items/999999/review", {"decision": "approve", "version": 1}).status_code == 404


def test_edit_and_approve_keeps_the_original_and_records_the_texts(client) -> None:
    dataset_id = new_dataset(client)
    import_tasks(client, dataset_id, TASKS[:3])
    reviewer = new_person(client)
    edited, unchanged, refused = reviewer.claim(dataset_id, 3, sort="oldest")
    before = {k: edited[k] for k in ("instruction", "input", "output")}

    with_edits = reviewer.decide(edited, "reject", reason="low_quality", edits={"output": "x"})
    assert error_fields(with_edits) == ["edits"]
    assert error_fields(reviewer.decide(edited, "approve", edits={"instruction": "   "})) == ["instruction"]
    assert reviewer.decide(edited, "approve", edits={"labels": "x"}).status_code == 422

    new_output = "Air molecules scatter short (blue) wavelengths of sunlight more than long ones."
    result = reviewer.approve(edited, edits={"output": f"  {new_output}\n", "input": ""})
    item = result["item"]
    assert item["status"] == "approved" and item["output"] == new_output
    assert item["instruction"] == before["instruction"]
    assert item["original"] == before  # the text as imported, kept once

    [event] = events_of(client, edited["id"])
    assert event["before"] == before
    assert event["after"] == {**before, "output": new_output}

    # Edits equal to the text are no edit at all.
    same = reviewer.approve(unchanged, edits={"instruction": unchanged["instruction"]})
    assert same["item"]["original"] is None and events_of(client, unchanged["id"])[0]["after"] is None

    stats = {r["user"]: r for r in progress_of(client, dataset_id)["by_reviewer"]}
    assert stats[reviewer.name]["edited"] == 1 and stats[reviewer.name]["approved"] == 2
    assert item_of(client, refused["id"])["status"] == "pending"

    # Edited again after a reopen: `original` stays the imported text, the event has the first edit as before.
    reopen = client.post(f"/v1/items/{edited['id']}/reopen", json={"version": item["version"]})
    reopened = reopen.json()["item"]
    again = reviewer.approve(reopened, edits={"instruction": "Explain in two sentences why the sky is blue."})
    assert again["item"]["original"] == before and again["item"]["output"] == new_output
    assert events_of(client, edited["id"])[-1]["before"] == {**before, "output": new_output}


def test_stale_versions_and_second_decisions_are_409_with_the_current_item(client) -> None:
    dataset_id = new_dataset(client)
    import_tasks(client, dataset_id, TASKS[:3])
    alice, bob = new_person(client), new_person(client)
    first, second = alice.claim(dataset_id, 2, sort="oldest")

    decided = alice.approve(first)
    # Deciding again (a double key press, a second tab): the item is no longer pending.
    assert_stale(alice.decide(first), first["id"], status="approved", version=2)
    assert_stale(
        alice.decide(decided["item"], "reject", reason="other"), first["id"], status="approved", version=2
    )
    assert [e["action"] for e in events_of(client, first["id"])] == ["approve"]

    # An item alice holds is not bob's to decide.
    assert_stale(bob.decide(second), second["id"], status="pending", version=1)
    # A version that is not the item's is stale, whoever sends it.
    assert_stale(alice.decide({**second, "version": 7}), second["id"], status="pending", version=1)
    assert alice.approve(second)["item"]["version"] == 2


# --- undo -----------------------------------------------------------------------------------------------------


def test_undo_walks_back_ones_own_decisions_one_by_one(client) -> None:
    dataset_id = new_dataset(client)
    import_tasks(client, dataset_id, TASKS[:5])
    reviewer = new_person(client)
    first, second, third, *_ = reviewer.claim(dataset_id, 5, sort="oldest")
    reviewer.approve(first)
    reviewer.reject(second, "duplicate")
    edited = reviewer.approve(third, edits={"output": "A better answer."})["item"]
    assert edited["original"] is not None

    # The last decision first: the edit is taken back, and the item is pending and in the reviewer's hands.
    response = reviewer.undo(dataset_id)
    assert response.status_code == 200, response.text
    undone = response.json()["item"]
    assert undone["id"] == third["id"] and undone["status"] == "pending"
    assert undone["output"] == third["output"] and undone["original"] is None and undone["decided_at"] is None
    assert undone["version"] == 3
    assert third["id"] in reviewer.renew(dataset_id)["item_ids"]
    decision, undo_event = events_of(client, third["id"])
    assert (undo_event["action"], undo_event["undoes_id"]) == ("undo", decision["id"])
    assert (undo_event["from_status"], undo_event["to_status"]) == ("approved", "pending")
    assert undo_event["before"]["output"] == "A better answer."
    assert undo_event["after"]["output"] == third["output"]

    assert reviewer.undo(dataset_id).json()["item"]["id"] == second["id"]
    assert reviewer.undo(dataset_id).json()["item"]["id"] == first["id"]
    assert reviewer.undo(dataset_id).status_code == 404  # nothing left to undo
    assert all(item_of(client, i["id"])["status"] == "pending" for i in (first, second, third))
    assert reviewer.claim_ids(dataset_id, 5, sort="oldest")[:3] == [first["id"], second["id"], third["id"]]

    # Undone decisions no longer count as the reviewer's work.
    [stats] = progress_of(client, dataset_id)["by_reviewer"]
    assert stats == {
        "user": reviewer.name,
        "decisions": 0,
        "approved": 0,
        "rejected": 0,
        "edited": 0,
        "answered": 0,
        "disputed": 0,
        "undone": 3,
    }

    # An undone item can be decided again, and that decision undone in turn.
    again = item_of(client, first["id"])
    reviewer.reject(again, "other")
    assert reviewer.undo(dataset_id).json()["item"]["status"] == "pending"


def test_undo_outside_its_window_finds_nothing(database_url) -> None:
    with running_service(make_settings(database_url, review_undo_seconds=0)) as client:
        dataset_id = new_dataset(client)
        import_tasks(client, dataset_id, TASKS[:1])
        reviewer = new_person(client)
        [item] = reviewer.claim(dataset_id, 1)
        reviewer.approve(item)
        assert reviewer.undo(dataset_id).status_code == 404
        assert item_of(client, item["id"])["status"] == "approved"


def test_undo_refuses_an_item_changed_since_and_never_undoes_another_reviewers_decision(client) -> None:
    dataset_id = new_dataset(client)
    import_tasks(client, dataset_id, TASKS[:4])
    alice, bob = new_person(client), new_person(client)
    first, second = alice.claim(dataset_id, 2, sort="oldest")
    third, fourth = bob.claim(dataset_id, 2, sort="oldest")

    decided = alice.approve(first)["item"]
    reopened = client.post(f"/v1/items/{first['id']}/reopen", json={"version": decided["version"]})
    assert reopened.status_code == 200, reopened.text
    assert_stale(alice.undo(dataset_id), first["id"], status="pending", version=3)
    assert item_of(client, first["id"])["status"] == "pending"

    bob.reject(third, "unsafe")
    alice.approve(second)
    assert bob.undo(dataset_id).json()["item"]["id"] == third["id"]  # his own, not alice's later one
    assert item_of(client, second["id"])["status"] == "approved"
    assert bob.undo(dataset_id).status_code == 404
    assert alice.undo(dataset_id).json()["item"]["id"] == second["id"]
    assert item_of(client, fourth["id"])["status"] == "pending"


# --- restore and reopen ---------------------------------------------------------------------------------------


def test_a_reviewer_restores_a_filtered_item_and_the_event_keeps_the_filter_reason(client) -> None:
    dataset_id = new_dataset(client)
    imported = import_records(
        client,
        dataset_id,
        [
            {"instruction": "Name three famous painters of the Renaissance.", "input": "", "output": "?!"},
            {
                "instruction": "Suggest a title for an essay about rivers.",
                "input": "",
                "output": "Flowing Lines",
            },
            {"instruction": "Suggest a title for an essay about rivers.", "input": "", "output": "Meanders"},
        ],
    )
    assert imported["filtered"] == {"output_only_punctuation": 1} and imported["duplicates"] == 1
    filtered, duplicate = all_items(client, dataset_id, status="filtered")
    [pending] = all_items(client, dataset_id, status="pending")
    reviewer = new_person(client)

    assert_stale(
        reviewer.post(f"/v1/items/{filtered['id']}/restore", {"version": 9}),
        filtered["id"],
        status="filtered",
        version=1,
    )
    assert_stale(
        reviewer.post(f"/v1/items/{pending['id']}/restore", {"version": 1}),
        pending["id"],
        status="pending",
        version=1,
    )

    restored = reviewer.post(
        f"/v1/items/{filtered['id']}/restore", {"version": 1, "note": "the answer is fine"}
    )
    assert restored.status_code == 200, restored.text
    item = restored.json()["item"]
    assert (item["status"], item["filter_reason"], item["version"]) == ("pending", None, 2)
    [event] = events_of(client, filtered["id"])
    assert (event["action"], event["from_status"], event["to_status"]) == ("restore", "filtered", "pending")
    assert event["reason"] == "output_only_punctuation" and event["note"] == "the answer is fine"
    assert filtered["id"] in reviewer.claim_ids(dataset_id, 5)  # back in the queue

    # A near-duplicate restored loses its signal with its reason (its neighbour stays shown).
    assert (duplicate["filter_reason"], duplicate["duplicate_signal"]) == ("near_duplicate", "exact")
    item = reviewer.post(f"/v1/items/{duplicate['id']}/restore", {"version": 1}).json()["item"]
    assert (item["status"], item["filter_reason"], item["duplicate_signal"]) == ("pending", None, None)
    assert item["nearest"]["id"] == pending["id"]
    assert events_of(client, duplicate["id"])[0]["reason"] == "near_duplicate"


def test_only_an_admin_reopens_a_decided_item_and_its_answers_are_cleared(client) -> None:
    dataset_id = new_dataset(client)
    import_tasks(client, dataset_id, TASKS[:2])
    alice, bob = new_person(client), new_person(client)
    item, other = alice.claim(dataset_id, 2, sort="oldest")
    decided = alice.reject(item, "wrong_output")["item"]
    assert len(client.get(f"/v1/items/{item['id']}/responses").json()) == 1

    assert alice.post(f"/v1/items/{item['id']}/reopen", {"version": decided["version"]}).status_code == 403
    assert_stale(
        client.post(f"/v1/items/{item['id']}/reopen", json={"version": 1}),
        item["id"],
        status="rejected",
        version=2,
    )
    # A pending item cannot be reopened: a 409 with the item, like every other refused transition.
    assert_stale(
        client.post(f"/v1/items/{other['id']}/reopen", json={"version": 1}),
        other["id"],
        status="pending",
        version=1,
    )

    reopened = client.post(
        f"/v1/items/{item['id']}/reopen", json={"version": decided["version"], "note": "second look"}
    )
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["item"]["status"] == "pending" and reopened.json()["item"]["decided_at"] is None
    assert client.get(f"/v1/items/{item['id']}/responses").json() == []
    event = events_of(client, item["id"])[-1]
    assert (event["action"], event["from_status"], event["to_status"]) == ("reopen", "rejected", "pending")
    assert event["actor"] == admin_of(client).name and event["note"] == "second look"

    # Back in the queue for anyone, the reviewer who decided it included.
    assert bob.claim_ids(dataset_id, 5) == [item["id"]]
    assert alice.decide(reopened.json()["item"]).status_code == 409  # bob holds it now


# --- bulk actions ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bulk_actions_change_the_whole_query_in_chunks(client, database, shared_data) -> None:
    dataset_id = new_dataset(client)
    texts = bench_instructions(shared_data, bulk.CHUNK + 150)
    good = import_records(
        client,
        dataset_id,
        [{"instruction": t, "input": "", "output": "An answer."} for t in texts],
        "good.jsonl",
    )
    # Punctuation-only answers: filtered before the near-duplicate index, so cheap in any number.
    junk = import_records(
        client, dataset_id, [{"instruction": t, "input": "", "output": "..."} for t in texts], "junk.jsonl"
    )
    assert good["accepted"] > bulk.CHUNK and junk["filtered"]["output_only_punctuation"] > bulk.CHUNK
    # The import's counters add up, and its items say the same (it was stored in several chunks).
    dropped = good["duplicates"] + sum(good["filtered"].values())
    assert good["records"] == good["done"] == good["accepted"] + dropped
    stored = Counter(i["status"] for i in all_items(client, dataset_id, import_id=good["id"]))
    assert stored == {"pending": good["accepted"], "filtered": good["records"] - good["accepted"]}
    admin, reviewer = admin_of(client), new_person(client)
    base = f"/v1/datasets/{dataset_id}/review/bulk"
    approve_query = {"action": "approve", "filters": {"import_id": good["id"]}}

    # Reviewers may not; a rejection needs a reason of the dataset's.
    assert reviewer.post(base, approve_query).status_code == 403
    assert error_fields(client.post(base, json={"action": "reject", "filters": {}})) == ["reason"]
    unknown = client.post(base, json={"action": "reject", "filters": {}, "reason": "nope"})
    assert error_fields(unknown) == ["reason"]

    # A dry run counts the whole query (several pages) and changes nothing.
    dry = client.post(base, json={**approve_query, "dry_run": True}).json()
    assert dry == {"bulk_id": None, "matched": good["accepted"], "changed": 0, "dry_run": True}
    assert len(all_items(client, dataset_id, status="pending")) == good["accepted"]

    # Between the dry run and the run, a reviewer decides two items and holds a third.
    held = reviewer.claim(dataset_id, 3, sort="oldest")
    reviewer.approve(held[0])
    reviewer.reject(held[1], "duplicate")

    run = client.post(base, json={**approve_query, "note": "checked by sampling"})
    assert run.status_code == 200, run.text
    result = run.json()
    changed = good["accepted"] - 2
    assert result["matched"] == result["changed"] == changed and result["bulk_id"] and not result["dry_run"]
    statuses = Counter(i["status"] for i in all_items(client, dataset_id, import_id=good["id"]))
    assert statuses["approved"] == changed + 1 and statuses["rejected"] == 1 and statuses["pending"] == 0
    assert [e["action"] for e in events_of(client, held[1]["id"])] == ["reject"]  # left alone
    # One event per changed item, all with the bulk's id; claims on them are gone.
    with database() as session:
        per_item = Counter(
            session.scalars(select(ReviewEvent.item_id).where(ReviewEvent.bulk_id == result["bulk_id"]))
        )
        assert len(per_item) == changed and set(per_item.values()) == {1}
        claims = select(func.count()).select_from(ReviewClaim).where(ReviewClaim.dataset_id == dataset_id)
        assert session.scalar(claims) == 0
    event = events_of(client, held[2]["id"])[-1]
    assert (event["action"], event["actor"], event["bulk_id"]) == ("approve", admin.name, result["bulk_id"])
    assert event["note"] == "checked by sampling" and event["version_after"] == 2
    assert reviewer.renew(dataset_id)["item_ids"] == []
    assert_stale(reviewer.decide(held[2]), held[2]["id"], status="approved", version=2)
    # The reviewer's undo takes back their own last decision (bulk events are the admin's, not theirs).
    assert reviewer.undo(dataset_id).json()["item"]["id"] == held[1]["id"]

    # Restore every filtered item of the junk import, then reject what came back (a query on the new status).
    junk_query = {"import_id": junk["id"], "filter_reason": "output_only_punctuation"}
    restored = client.post(base, json={"action": "restore", "filters": junk_query}).json()
    assert restored["matched"] == restored["changed"] == junk["filtered"]["output_only_punctuation"]
    assert client.post(base, json={"action": "restore", "filters": junk_query}).json()["changed"] == 0
    sample = all_items(client, dataset_id, import_id=junk["id"], status="pending")
    assert len(sample) == restored["changed"] and all(i["filter_reason"] is None for i in sample)
    restore_event = events_of(client, sample[-1]["id"])[-1]
    assert (restore_event["action"], restore_event["reason"]) == ("restore", "output_only_punctuation")

    rejected = client.post(
        base,
        json={
            "action": "reject",
            "reason": "low_quality",
            "filters": {"import_id": junk["id"], "status": "pending"},
        },
    ).json()
    assert rejected["changed"] == restored["changed"]
    junk_statuses = Counter(i["status"] for i in all_items(client, dataset_id, import_id=junk["id"]))
    assert junk_statuses == {
        "rejected": rejected["changed"],
        "filtered": junk["records"] - rejected["changed"],
    }
    reject_event = events_of(client, sample[0]["id"])[-1]
    assert (reject_event["action"], reject_event["reason"]) == ("reject", "low_quality")
    assert reject_event["bulk_id"] == rejected["bulk_id"]

    progress = progress_of(client, dataset_id)
    assert progress["bulk"] == {
        "approve": changed,
        "restore": restored["changed"],
        "reject": rejected["changed"],
    }
    assert [r["user"] for r in progress["by_reviewer"]] == [reviewer.name]  # bulk work is the admin's, apart
    actions = [a["action"] for a in client.get("/v1/audit").json()]
    assert {"review.bulk_approve", "review.bulk_restore", "review.bulk_reject"} <= set(actions)
