"""Snapshots on SQLite and PostgreSQL: a copy of the approved items at one moment, split by seed, with its
training and validation files; unchanged by later review; and the HTTP routes with their errors and access."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.auth.roles import Role
from app.core.db import transaction
from app.datasets.service import create_dataset
from app.finetune.files import iter_content
from app.finetune.models import Snapshot, SnapshotItem, StoredFile
from app.finetune.snapshots import (
    EmptyExportError,
    ExportSource,
    create_snapshot,
    iter_records,
    split_key,
    validation_count,
)
from app.generation.models import Item, ItemStatus
from app.review.models import ReviewAction, ReviewEvent
from tests.support.items import add_items
from tests.support.service import bearer, make_settings, new_user_token, running_service


def make_dataset(
    sessions: sessionmaker[Session], name: str, approved: int, **others: int
) -> tuple[int, list[int]]:
    with transaction(sessions) as session:
        dataset_id = create_dataset(session, name).id
        ids = add_items(session, dataset_id, approved)
        for status, n in others.items():
            add_items(session, dataset_id, n, ItemStatus(status))
    return dataset_id, ids


def snapshot_now(sessions: sessionmaker[Session], dataset_id: int, **kwargs: Any) -> Snapshot:
    with transaction(sessions) as session:
        return create_snapshot(session, dataset_id, created_by="tester", **kwargs)


def copied(sessions: sessionmaker[Session], snapshot_id: int) -> list[tuple[Any, ...]]:
    with sessions() as session:
        rows = session.execute(
            select(
                SnapshotItem.position,
                SnapshotItem.item_id,
                SnapshotItem.split,
                SnapshotItem.instruction,
                SnapshotItem.input,
                SnapshotItem.output,
                SnapshotItem.language,
                SnapshotItem.model,
            )
            .where(SnapshotItem.snapshot_id == snapshot_id)
            .order_by(SnapshotItem.position)
        )
        return [tuple(r) for r in rows]


def file_text(sessions: sessionmaker[Session], file_id: int | None) -> bytes:
    assert file_id is not None
    return b"".join(iter_content(sessions, file_id))


def test_a_snapshot_copies_the_approved_items_splits_them_and_writes_both_files(sessions) -> None:
    dataset_id, ids = make_dataset(sessions, "demo", 25, pending=5, rejected=3)
    make_dataset(sessions, "other", 4)
    with transaction(sessions) as session:  # review history behind it
        for actor, action, after in (
            ("alice", "approve", {"output": "x"}),
            ("alice", "approve", None),
            ("bob", "reject", None),
        ):
            session.add(
                ReviewEvent(
                    dataset_id=dataset_id,
                    item_id=ids[0],
                    actor=actor,
                    action=ReviewAction(action),
                    from_status="pending",
                    to_status="approved" if action == "approve" else "rejected",
                    after=after,
                    before={"output": "y"} if after else None,
                    version_after=2,
                )
            )
    snapshot = snapshot_now(sessions, dataset_id, seed=7, validation_fraction=0.2)
    assert (snapshot.items, snapshot.train, snapshot.validation) == (25, 20, 5)
    assert snapshot.seed == 7 and snapshot.validation_fraction == 0.2 and len(snapshot.content_hash) == 64

    rows = copied(sessions, snapshot.id)
    assert [r[0] for r in rows] == list(range(25))
    assert [r[1] for r in rows] == ids  # only this dataset's approved items, in id order
    # The split is the 5 smallest keys of (seed, item id): nothing about database order enters it.
    expected_validation = set(sorted(ids, key=lambda i: (split_key(7, i), i))[:5])
    assert {r[1] for r in rows if r[2] == "validation"} == expected_validation

    with sessions() as session:
        items = {i.id: i for i in session.scalars(select(Item).where(Item.id.in_(ids)))}
        training = session.get(StoredFile, snapshot.training_file_id)
        validation = session.get(StoredFile, snapshot.validation_file_id)
        assert training.purpose == validation.purpose == "fine-tune"
        assert training.filename == f"demo-snapshot-{snapshot.id}-train.jsonl"
        assert validation.filename == f"demo-snapshot-{snapshot.id}-validation.jsonl"
        assert (training.records, validation.records) == (20, 5)
        assert (
            session.scalar(select(StoredFile.id).where(StoredFile.filename == "demo-snapshot.jsonl")) is None
        )
    for split, stored in (("train", training), ("validation", validation)):
        data = file_text(sessions, stored.id)
        assert len(data) == stored.bytes
        lines = [json.loads(line) for line in data.decode().splitlines()]
        wanted = [items[r[1]] for r in rows if r[2] == split]
        assert lines == [
            {
                "messages": [
                    {"role": "user", "content": i.instruction + (f"\n\n{i.input}" if i.input else "")},
                    {"role": "assistant", "content": i.output},
                ]
            }
            for i in wanted
        ]
    summary = snapshot.summary
    assert summary["dataset"] == {"id": dataset_id, "name": "demo"}
    assert summary["languages"] == {"zh": 13, "latin": 12}
    assert summary["models"] == {"qwen": 16, "unknown": 9}
    assert summary["items_by_status"]["approved"] == 25 and summary["items_by_status"]["pending"] == 5
    assert summary["thresholds"]["rouge_threshold"] == 0.7
    review = summary["review"]
    assert (
        review["approved"],
        review["rejected"],
        review["edited"],
        review["reviewers"],
        review["events"],
    ) == (
        2,
        1,
        1,
        2,
        3,
    )


def test_the_same_seed_gives_the_same_split_and_hash_another_seed_another(sessions) -> None:
    dataset_id, _ = make_dataset(sessions, "seeded", 30)
    first = snapshot_now(sessions, dataset_id, seed=123)
    again = snapshot_now(sessions, dataset_id, seed=123)
    other = snapshot_now(sessions, dataset_id, seed=124)
    splits = {s.id: [r[2] for r in copied(sessions, s.id)] for s in (first, again, other)}
    assert splits[first.id] == splits[again.id] and splits[first.id] != splits[other.id]
    assert first.content_hash == again.content_hash != other.content_hash
    assert first.validation == other.validation == 3
    assert file_text(sessions, first.training_file_id) == file_text(sessions, again.training_file_id)
    drawn = snapshot_now(sessions, dataset_id)  # no seed: one is drawn and recorded
    assert drawn.seed >= 0
    assert [r[2] for r in copied(sessions, drawn.id)] == [
        r[2] for r in copied(sessions, snapshot_now(sessions, dataset_id, seed=drawn.seed).id)
    ]


def test_a_snapshot_does_not_change_when_its_items_are_reopened_or_edited(sessions) -> None:
    dataset_id, ids = make_dataset(sessions, "frozen", 12)
    snapshot = snapshot_now(sessions, dataset_id, seed=1)
    before_rows = copied(sessions, snapshot.id)
    before_train = file_text(sessions, snapshot.training_file_id)
    before_validation = file_text(sessions, snapshot.validation_file_id)
    with transaction(sessions) as session:  # reopened and edited in review
        session.execute(
            update(Item)
            .where(Item.id.in_(ids[:6]))
            .values(status=ItemStatus.pending, output="edited later", version=Item.version + 1)
        )
        session.execute(update(Item).where(Item.id.in_(ids[6:8])).values(instruction="rewritten"))
    assert copied(sessions, snapshot.id) == before_rows
    assert file_text(sessions, snapshot.training_file_id) == before_train
    assert file_text(sessions, snapshot.validation_file_id) == before_validation
    with sessions() as session:
        assert session.get(Snapshot, snapshot.id).content_hash == snapshot.content_hash
        again = list(iter_records(session, ExportSource(dataset_id, snapshot.id), page_size=5))
        live = list(iter_records(session, ExportSource(dataset_id), page_size=5))
    assert [r.item_id for r in again] == ids and all(r.output != "edited later" for r in again)
    assert [r.item_id for r in live] == ids[6:]  # the live items did change
    # A new snapshot sees the change.
    assert snapshot_now(sessions, dataset_id, seed=1).items == 6


def test_small_snapshots_keep_one_training_item_and_an_empty_validation_has_no_file(sessions) -> None:
    assert [validation_count(n, 0.1) for n in (0, 1, 2, 3, 10, 14, 15, 100)] == [0, 0, 1, 1, 1, 1, 2, 10]
    assert validation_count(2, 0.5) == 1 and validation_count(3, 0.5) == 2 and validation_count(50, 0) == 0
    dataset_id, _ = make_dataset(sessions, "tiny", 1)
    one = snapshot_now(sessions, dataset_id, seed=3)
    assert (one.items, one.train, one.validation, one.validation_file_id) == (1, 1, 0, None)
    none_held_out = snapshot_now(sessions, dataset_id, seed=3, validation_fraction=0.0)
    assert none_held_out.validation_file_id is None


def test_an_empty_or_unknown_dataset_cannot_be_snapshotted(sessions) -> None:
    dataset_id, _ = make_dataset(sessions, "nothing approved", 0, pending=3, rejected=2)
    with pytest.raises(EmptyExportError, match="'nothing approved'.*no approved items"):
        snapshot_now(sessions, dataset_id)
    with sessions() as session:  # nothing was left behind
        assert session.scalar(select(Snapshot.id)) is None and session.scalar(select(StoredFile.id)) is None
    from app.core.errors import NotFoundError

    with pytest.raises(NotFoundError):
        snapshot_now(sessions, 999_999)


# --- HTTP ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def client(database_url):
    with running_service(make_settings(database_url, worker_enabled=False)) as client:
        yield client


def _seeded_dataset(client, name: str, approved: int, **others: int) -> int:  # noqa: ANN001
    dataset_id = client.post("/v1/datasets", json={"name": name}).json()["id"]
    with transaction(client.app.state.sessions) as session:
        add_items(session, dataset_id, approved)
        for status, n in others.items():
            add_items(session, dataset_id, n, ItemStatus(status))
    return dataset_id


def test_snapshot_routes_create_list_and_read(client) -> None:
    dataset_id = _seeded_dataset(client, "api", 20, pending=2)
    created = client.post(
        f"/v1/datasets/{dataset_id}/snapshots", json={"seed": 5, "validation_fraction": 0.25}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert created.headers["location"] == f"/v1/snapshots/{body['id']}"
    assert body["object"] == "dataset.snapshot" and body["dataset_id"] == dataset_id
    assert body["counts"] == {"items": 20, "train": 15, "validation": 5}
    assert body["seed"] == 5 and body["validation_fraction"] == 0.25
    assert isinstance(body["created_at"], int) and body["created_at"] > 1_700_000_000
    assert body["training_file"].startswith("file-") and body["validation_file"].startswith("file-")
    assert len(body["content_hash"]) == 64
    assert body["summary"]["languages"] == {"zh": 10, "latin": 10}
    assert body["summary"]["review"]["events"] == 0

    second = client.post(f"/v1/datasets/{dataset_id}/snapshots", json={}).json()  # defaults
    assert second["validation_fraction"] == 0.1 and second["counts"]["validation"] == 2
    assert second["seed"] >= 0
    listed = client.get(f"/v1/datasets/{dataset_id}/snapshots").json()
    assert listed["object"] == "list" and [s["id"] for s in listed["data"]] == [second["id"], body["id"]]
    assert not listed["has_more"]
    paged = client.get(f"/v1/datasets/{dataset_id}/snapshots", params={"limit": 1}).json()
    assert [s["id"] for s in paged["data"]] == [second["id"]] and paged["has_more"]
    rest = client.get(
        f"/v1/datasets/{dataset_id}/snapshots", params={"limit": 1, "before": second["id"]}
    ).json()
    assert [s["id"] for s in rest["data"]] == [body["id"]] and not rest["has_more"]
    assert client.get(f"/v1/snapshots/{body['id']}").json() == body

    # A snapshot's files are immutable parts of it: the files API serves them and refuses to delete them.
    training = client.get(f"/v1/files/{body['training_file']}/content")
    assert training.status_code == 200 and len(training.text.splitlines()) == 15
    refused = client.delete(f"/v1/files/{body['training_file']}")
    assert refused.status_code == 409 and f"snapshot {body['id']}" in refused.json()["error"]["message"]
    assert client.get(f"/v1/files/{body['validation_file']}").status_code == 200

    assert client.get("/v1/snapshots/999999").status_code == 404
    assert client.get("/v1/datasets/999999/snapshots").status_code == 404
    for bad in ({"validation_fraction": 0.6}, {"validation_fraction": -0.1}, {"seed": -1}, {"other": 1}):
        assert client.post(f"/v1/datasets/{dataset_id}/snapshots", json=bad).status_code == 422, bad


def test_snapshot_errors_and_access(client) -> None:
    empty = _seeded_dataset(client, "still in review", 0, pending=4)
    answer = client.post(f"/v1/datasets/{empty}/snapshots", json={})
    assert answer.status_code == 400
    assert "'still in review'" in answer.json()["detail"] and "no approved items" in answer.json()["detail"]
    assert client.post("/v1/datasets/999999/snapshots", json={}).status_code == 404

    dataset_id = _seeded_dataset(client, "guarded", 3)
    reviewer = bearer(new_user_token(client, Role.reviewer))
    refused = client.post(f"/v1/datasets/{dataset_id}/snapshots", json={}, headers=reviewer)
    assert refused.status_code == 403 and "finetune" in refused.json()["detail"]
    service = bearer(new_user_token(client, Role.service))
    made = client.post(f"/v1/datasets/{dataset_id}/snapshots", json={}, headers=service)
    assert made.status_code == 201
    # Reading snapshots is for every role that reads.
    assert client.get(f"/v1/snapshots/{made.json()['id']}", headers=reviewer).status_code == 200
    assert client.get(f"/v1/datasets/{dataset_id}/snapshots", headers=reviewer).status_code == 200
    assert (
        client.post(
            f"/v1/datasets/{dataset_id}/snapshots", json={}, headers={"Authorization": ""}
        ).status_code
        == 401
    )
