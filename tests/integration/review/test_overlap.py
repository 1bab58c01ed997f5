"""Overlap: k reviewers answer each item, through the HTTP API on SQLite and PostgreSQL. Agreeing answers decide
the item (an equal edit included), disagreeing ones make it `disputed` for an admin to settle; a full item is
not handed to anyone else; and the agreement figures of the progress report (share of agreeing items, pairwise
Cohen's kappa, Fleiss' kappa for k >= 3) match a hand computation and app.review.agreement."""

from __future__ import annotations

import pytest

from app.review.agreement import Rating, agreement
from tests.integration.review.conftest import (
    TASKS,
    events_of,
    import_tasks,
    item_of,
    new_dataset,
    new_person,
    progress_of,
)
from tests.support.service import all_items, make_settings, running_service


@pytest.fixture
def client(database_url):
    with running_service(make_settings(database_url)) as client:
        yield client


def responses_of(client, item_id: int) -> list[dict]:
    response = client.get(f"/v1/items/{item_id}/responses")
    assert response.status_code == 200, response.text
    return response.json()


def answer(person, item: dict, verdict: str, edits: dict | None = None) -> dict:
    body: dict = {"edits": edits} if edits else {}
    if verdict == "reject":
        body["reason"] = "low_quality"
    response = person.decide(item, verdict, **body)
    assert response.status_code == 200, response.text
    return response.json()


def test_two_reviewers_who_agree_decide_the_item(client) -> None:
    dataset_id = new_dataset(client, overlap=2)
    pending = import_tasks(client, dataset_id, TASKS[:4])
    alice, bob, carol = (new_person(client, name=n) for n in ("alice", "bob", "carol"))

    # Each item takes two reviewers: alice and bob hold the same ones, and there is nothing left for carol.
    mine = alice.claim(dataset_id, 3, sort="oldest")
    assert [i["id"] for i in mine] == [i["id"] for i in pending[:3]]
    assert bob.claim_ids(dataset_id, 3, sort="oldest") == [i["id"] for i in pending[:3]]
    assert carol.claim_ids(dataset_id, 3, sort="oldest") == [pending[3]["id"]]
    plain, edited, rejected = mine

    first = alice.approve(plain)
    assert (
        first["decided"] is False and first["item"]["status"] == "pending" and first["item"]["version"] == 1
    )
    assert alice.decide(plain).status_code == 409  # one answer per reviewer
    # Alice answered and bob holds it: the item is full, carol can neither claim nor answer it.
    assert plain["id"] not in carol.claim_ids(dataset_id, 5)
    assert carol.decide(plain).status_code == 409
    second = bob.approve(plain)
    assert second["decided"] is True and second["item"]["status"] == "approved"
    assert [e["action"] for e in events_of(client, plain["id"])] == ["respond", "approve"]
    assert [(r["user"], r["verdict"]) for r in responses_of(client, plain["id"])] == [
        ("alice", "approve"),
        ("bob", "approve"),
    ]

    # The same edit from both: approved with the edit, the imported text kept.
    fix = {"output": "A corrected answer, agreed on by both."}
    assert alice.approve(edited, edits=fix)["item"]["output"] == edited["output"]  # not applied yet
    agreed = bob.approve(edited, edits=fix)["item"]
    assert agreed["status"] == "approved" and agreed["output"] == fix["output"]
    assert agreed["original"]["output"] == edited["output"]
    assert events_of(client, edited["id"])[-1]["after"]["output"] == fix["output"]

    alice.reject(rejected, "duplicate")
    assert bob.reject(rejected, "duplicate")["item"]["status"] == "rejected"
    assert events_of(client, rejected["id"])[-1]["reason"] == "duplicate"

    # An answer can be undone while the item waits for the other reviewer: it is the reviewer's again.
    [last] = carol.claim(dataset_id, 1)
    carol.approve(last)
    undone = carol.undo(dataset_id)
    assert undone.status_code == 200 and undone.json()["item"]["status"] == "pending"
    assert responses_of(client, last["id"]) == [] and carol.claim_ids(dataset_id, 5) == [last["id"]]

    stats = {r["user"]: r for r in progress_of(client, dataset_id)["by_reviewer"]}
    assert (stats["alice"]["answered"], stats["bob"]["approved"], stats["bob"]["rejected"]) == (3, 2, 1)
    assert stats["carol"]["undone"] == 1 and stats["carol"]["decisions"] == 0


def test_disagreement_goes_to_an_admin_who_sees_the_answers_side_by_side(client) -> None:
    dataset_id = new_dataset(client, overlap=2)
    import_tasks(client, dataset_id, TASKS[:3])
    alice, bob = new_person(client, name="alice"), new_person(client, name="bob")
    verdicts, edits, reopened = alice.claim(dataset_id, 3, sort="oldest")
    bob.claim(dataset_id, 3, sort="oldest")

    answer(alice, verdicts, "approve")
    disputed = answer(bob, verdicts, "reject")
    assert disputed["decided"] is True and disputed["item"]["status"] == "disputed"
    # Same verdict, different edits: also a disagreement.
    answer(alice, edits, "approve", {"output": "Alice's wording."})
    assert answer(bob, edits, "approve", {"output": "Bob's wording."})["item"]["status"] == "disputed"
    assert item_of(client, edits["id"])["output"] == edits["output"]  # neither edit applied

    side_by_side = responses_of(client, edits["id"])
    assert [(r["user"], r["verdict"], r["edits"]) for r in side_by_side] == [
        ("alice", "approve", {"output": "Alice's wording."}),
        ("bob", "approve", {"output": "Bob's wording."}),
    ]
    assert alice.get(f"/v1/items/{edits['id']}/responses").status_code == 403
    assert [i["id"] for i in all_items(client, dataset_id, status="pending")] == [reopened["id"]]

    # Reviewers cannot settle a dispute; an admin can, with either answer or a verdict of their own.
    current = item_of(client, verdicts["id"])
    assert bob.decide(current, "approve").status_code == 403
    assert item_of(client, verdicts["id"])["status"] == "disputed"
    settled = client.post(
        f"/v1/items/{verdicts['id']}/review",
        json={"decision": "reject", "version": current["version"], "reason": "wrong_output"},
    )
    assert settled.status_code == 200 and settled.json()["item"]["status"] == "rejected"
    event = events_of(client, verdicts["id"])[-1]
    assert (event["action"], event["from_status"], event["reason"]) == ("reject", "disputed", "wrong_output")

    current = item_of(client, edits["id"])
    settled = client.post(
        f"/v1/items/{edits['id']}/review",
        json={"decision": "approve", "version": current["version"], "edits": {"output": "Bob's wording."}},
    ).json()["item"]
    assert settled["status"] == "approved" and settled["output"] == "Bob's wording."
    assert settled["original"]["output"] == edits["output"]

    # The answer that made a dispute can be undone: the item waits again, with the other answer kept.
    answer(alice, reopened, "reject")
    answer(bob, reopened, "approve")
    undone = bob.undo(dataset_id).json()["item"]
    assert undone["status"] == "pending" and [r["user"] for r in responses_of(client, reopened["id"])] == [
        "alice"
    ]
    assert bob.claim_ids(dataset_id, 5) == [reopened["id"]]
    assert answer(bob, undone, "approve")["item"]["status"] == "disputed"

    # An admin can also send a disputed item back: its answers go, the reviewers may answer afresh.
    current = item_of(client, reopened["id"])
    assert current["status"] == "disputed"
    again = client.post(f"/v1/items/{reopened['id']}/reopen", json={"version": current["version"]})
    assert again.status_code == 200 and again.json()["item"]["status"] == "pending"
    assert responses_of(client, reopened["id"]) == []
    assert alice.claim_ids(dataset_id, 5) == [reopened["id"]]


def test_settings_keep_what_is_left_out_and_a_lower_overlap_concludes_answered_items(client) -> None:
    defaults = progress_of(client, new_dataset(client))["settings"]["reject_reasons"]
    dataset_id = new_dataset(client)
    settings_url = f"/v1/datasets/{dataset_id}/review/settings"
    put = client.put(settings_url, json={"overlap": 3})  # the reasons stay the service's
    assert put.status_code == 200 and put.json() == {"overlap": 3, "reject_reasons": defaults}
    assert client.put(settings_url, json={"reject_reasons": []}).status_code == 422
    assert client.put(settings_url, json={"overlap": 0}).status_code == 422

    pending = import_tasks(client, dataset_id, TASKS[:4])
    alice, bob = new_person(client, name="alice"), new_person(client, name="bob")
    agreed, split, once, untouched = alice.claim(dataset_id, 4, sort="oldest")
    bob.claim(dataset_id, 2, sort="oldest")
    answer(alice, agreed, "approve")
    answer(bob, agreed, "approve")
    answer(alice, split, "approve")
    answer(bob, split, "reject")
    answer(alice, once, "reject")
    assert {i["status"] for i in all_items(client, dataset_id)} == {"pending"}

    # Two answers are enough now: the items that have them are decided (or disputed) at once; the others wait.
    lowered = client.put(settings_url, json={"overlap": 2})
    assert lowered.status_code == 200 and lowered.json()["overlap"] == 2
    status = {i["id"]: i["status"] for i in all_items(client, dataset_id)}
    assert [status[i["id"]] for i in (agreed, split, once, untouched)] == [
        "approved",
        "disputed",
        "pending",
        "pending",
    ]
    assert events_of(client, agreed["id"])[-1]["action"] == "approve"
    assert [i["id"] for i in pending] == [i["id"] for i in (agreed, split, once, untouched)]
    # Down to one: alice's lone rejection decides; the untouched item is hers alone now (she holds it).
    client.put(settings_url, json={"overlap": 1})
    assert item_of(client, once["id"])["status"] == "rejected"
    assert item_of(client, untouched["id"])["status"] == "pending"
    assert bob.claim_ids(dataset_id, 5) == []
    assert alice.claim_ids(dataset_id, 5) == [untouched["id"]]


# Verdicts of alice and bob on six items, and the edits that make the sixth a disagreement.
PAIR_VERDICTS = [
    ("approve", "approve"),
    ("approve", "reject"),
    ("reject", "reject"),
    ("approve", "approve"),
    ("reject", "approve"),
    ("approve", "approve"),
]


def test_pairwise_agreement_matches_a_hand_computation(client) -> None:
    dataset_id = new_dataset(client, overlap=2)
    import_tasks(client, dataset_id, TASKS[: len(PAIR_VERDICTS)])
    alice, bob = new_person(client, name="alice"), new_person(client, name="bob")
    items = alice.claim(dataset_id, 10, sort="oldest")
    assert bob.claim_ids(dataset_id, 10, sort="oldest") == [i["id"] for i in items]
    for n, (item, (a, b)) in enumerate(zip(items, PAIR_VERDICTS, strict=True)):
        last = n == len(items) - 1
        answer(alice, item, a, {"output": "Alice's take."} if last else None)
        answer(bob, item, b, {"output": "Bob's take."} if last else None)

    report = progress_of(client, dataset_id)
    # Items 1, 3 and 4 agree; 6 has equal verdicts but different edits, so it counts for kappa only.
    assert report["by_status"]["approved"] == 2 and report["by_status"]["rejected"] == 1
    assert report["by_status"]["disputed"] == 3
    agreed = report["agreement"]
    assert (agreed["items"], agreed["agreeing_items"]) == (6, 3)
    assert agreed["agreement_share"] == pytest.approx(0.5)
    # Cohen's kappa by hand: p_o = 4/6; alice approves 4 of 6, bob approves 4 of 6, so
    # p_e = (4/6)² + (2/6)² = 20/36, and kappa = (24/36 - 20/36) / (1 - 20/36) = 4/16.
    [pair] = agreed["pairs"]
    assert (pair["reviewer_a"], pair["reviewer_b"], pair["items"]) == ("alice", "bob", 6)
    assert pair["observed"] == pytest.approx(4 / 6)
    assert pair["kappa"] == pytest.approx(0.25)
    assert agreed["mean_pairwise_kappa"] == pytest.approx(0.25)
    assert agreed["fleiss_kappa"] is None and agreed["fleiss_raters"] is None
    decisions = {r["user"]: r["decisions"] for r in report["by_reviewer"]}
    assert decisions == {"alice": 6, "bob": 6}


# Verdicts of three reviewers on four items.
TRIPLE_VERDICTS = [
    ("approve", "approve", "approve"),
    ("approve", "approve", "reject"),
    ("reject", "reject", "reject"),
    ("reject", "approve", "approve"),
]


def test_three_reviewers_per_item_report_fleiss_kappa(client) -> None:
    dataset_id = new_dataset(client, overlap=3)
    import_tasks(client, dataset_id, TASKS[: len(TRIPLE_VERDICTS)])
    people = [new_person(client, name=n) for n in ("ann", "ben", "cat")]
    held = [p.claim(dataset_id, 10, sort="oldest") for p in people]
    items = held[0]
    assert len(items) == len(TRIPLE_VERDICTS) and all(h == items for h in held)  # all three hold every item
    assert new_person(client).claim_ids(dataset_id, 10) == []  # three holders fill every item
    ratings = []
    for item, verdicts in zip(items, TRIPLE_VERDICTS, strict=True):
        for person, verdict in zip(people, verdicts, strict=True):
            answer(person, item, verdict)
            ratings.append(Rating(item["id"], person.name, verdict))

    agreed = progress_of(client, dataset_id)["agreement"]
    expected = agreement(ratings)
    assert (agreed["fleiss_items"], agreed["fleiss_raters"]) == (4, 3)
    assert agreed["fleiss_kappa"] == pytest.approx(expected.fleiss_kappa)
    # By hand: P_i = 1, 1/3, 1, 1/3 (P_bar = 2/3); p_approve = 7/12, p_reject = 5/12 (P_e = 74/144), so
    # kappa = (2/3 - 74/144) / (1 - 74/144) = 11/35.
    assert agreed["fleiss_kappa"] == pytest.approx(11 / 35)
    assert (agreed["items"], agreed["agreeing_items"]) == (4, 2)
    assert len(agreed["pairs"]) == 3 and agreed["mean_pairwise_kappa"] == pytest.approx(
        expected.mean_pairwise_kappa
    )
    statuses = [item_of(client, i["id"])["status"] for i in items]
    assert statuses == ["approved", "disputed", "rejected", "disputed"]
