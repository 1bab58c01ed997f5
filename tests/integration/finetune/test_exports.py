"""Exports on SQLite and PostgreSQL, over HTTP and from the CLI: every format holds exactly the approved items
(or a snapshot's copy), Hugging Face exports load back with `datasets`, and a large export streams, reading its
items page by page."""

from __future__ import annotations

import functools
import json
import re
import tempfile
from collections.abc import Iterator

import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.auth.roles import Role
from app.cli import app as cli_app
from app.cli import common
from app.core.config import get_settings
from app.core.db import transaction
from app.datasets.service import create_dataset
from app.finetune import exports, formats
from app.finetune.formats import ExportRecord
from app.finetune.snapshots import ExportSource, create_snapshot
from app.generation.models import Item, ItemStatus
from tests.support.items import add_items
from tests.support.service import bearer, make_settings, new_user_token, running_service

runner = CliRunner()


add_items = functools.partial(add_items, model_every=2)  # every other item names a model


def approved(session: Session, dataset_id: int) -> list[Item]:
    return list(
        session.scalars(
            select(Item)
            .where(Item.dataset_id == dataset_id, Item.status == ItemStatus.approved)
            .order_by(Item.id)
        )
    )


def as_record(item: Item) -> ExportRecord:
    return ExportRecord(item.instruction, item.input, item.output, item.language, item.model, item.id)


@pytest.fixture
def client(database_url):
    with running_service(make_settings(database_url, worker_enabled=False)) as client:
        yield client


def _dataset(client, name: str, approved_n: int, **others: int) -> int:  # noqa: ANN001
    dataset_id = client.post("/v1/datasets", json={"name": name}).json()["id"]
    with transaction(client.app.state.sessions) as session:
        add_items(session, dataset_id, approved_n)
        for status, n in others.items():
            add_items(session, dataset_id, n, ItemStatus(status))
    return dataset_id


# --- HTTP ---------------------------------------------------------------------------------------------------------


def test_every_format_over_http_holds_exactly_the_approved_items(client, tmp_path, monkeypatch) -> None:
    dataset_id = _dataset(client, '我的 "data"; set', 7, pending=3, rejected=2)
    with client.app.state.sessions() as session:
        items = [as_record(i) for i in approved(session, dataset_id)]
    for fmt in ("alpaca", "sharegpt", "openai"):
        answer = client.get(f"/v1/datasets/{dataset_id}/export", params={"format": fmt})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith(formats.MEDIA_TYPES[fmt])
        disposition = answer.headers["content-disposition"]
        extension = formats.EXTENSIONS[fmt]
        assert disposition.startswith(f'attachment; filename="data-set-approved{extension}"'), disposition
        assert f"filename*=UTF-8''%E6%88%91%E7%9A%84-data-set-approved{extension}" in disposition
        parsed = (
            [json.loads(line) for line in answer.text.splitlines()]
            if fmt == "openai"
            else json.loads(answer.text)
        )
        assert parsed == [formats.CONVERTERS[fmt](r) for r in items]
        assert "</script>" not in answer.text

    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    answer = client.get(f"/v1/datasets/{dataset_id}/export", params={"format": "parquet"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/vnd.apache.parquet"
    (tmp_path / "got.parquet").write_bytes(answer.content)
    table = pq.read_table(tmp_path / "got.parquet")
    assert table.column_names == list(formats.TABLE_COLUMNS)
    assert table.to_pylist() == [formats.table_row(r) for r in items]
    assert list(spool.iterdir()) == []  # the temporary file is gone


def test_a_snapshot_exports_its_copy_and_its_splits(client) -> None:
    dataset_id = _dataset(client, "snap", 10)
    snapshot = client.post(
        f"/v1/datasets/{dataset_id}/snapshots", json={"seed": 9, "validation_fraction": 0.3}
    ).json()
    with transaction(client.app.state.sessions) as session:  # later review changes nothing in the snapshot
        for item in approved(session, dataset_id)[:4]:
            item.status, item.output = ItemStatus.pending, "changed"
    url = f"/v1/datasets/{dataset_id}/export"
    whole = client.get(url, params={"format": "alpaca", "snapshot": snapshot["id"]})
    assert whole.status_code == 200
    assert len(whole.json()) == 10 and all(r["output"] != "changed" for r in whole.json())
    assert f'filename="snap-snapshot-{snapshot["id"]}.json"' in whole.headers["content-disposition"]
    live = client.get(url, params={"format": "alpaca"}).json()
    assert len(live) == 6
    train = client.get(url, params={"format": "openai", "snapshot": snapshot["id"], "split": "train"})
    validation = client.get(
        url, params={"format": "openai", "snapshot": snapshot["id"], "split": "validation"}
    )
    assert len(train.text.splitlines()) == 7 and len(validation.text.splitlines()) == 3
    assert f"snap-snapshot-{snapshot['id']}-train.jsonl" in train.headers["content-disposition"]
    parquet = client.get(url, params={"format": "parquet", "snapshot": snapshot["id"]})
    import io

    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.column("split").to_pylist().count("validation") == 3
    # The training file of the snapshot and the export of its train split are the same bytes.
    assert client.get(f"/v1/files/{snapshot['training_file']}/content").content == train.content


def test_export_errors_and_access(client) -> None:
    empty = _dataset(client, "empty one", 0, pending=2)
    answer = client.get(f"/v1/datasets/{empty}/export", params={"format": "alpaca"})
    assert answer.status_code == 400 and "'empty one'" in answer.json()["detail"]
    assert "no approved items" in answer.json()["detail"]
    assert client.get(f"/v1/datasets/{empty}/export", params={"format": "parquet"}).status_code == 400
    assert client.get("/v1/datasets/999999/export", params={"format": "alpaca"}).status_code == 404
    dataset_id = _dataset(client, "full", 3)
    other = _dataset(client, "other", 3)
    snapshot = client.post(f"/v1/datasets/{other}/snapshots", json={}).json()
    url = f"/v1/datasets/{dataset_id}/export"
    assert client.get(url, params={"format": "alpaca", "snapshot": snapshot["id"]}).status_code == 404
    assert client.get(url, params={"format": "alpaca", "snapshot": 999999}).status_code == 404
    no_snapshot_split = client.get(url, params={"format": "alpaca", "split": "train"})
    assert no_snapshot_split.status_code == 422 and no_snapshot_split.json()["detail"][0]["loc"] == [
        "query",
        "split",
    ]
    assert client.get(url, params={"format": "csv"}).status_code == 422
    assert client.get(url).status_code == 422
    tiny = _dataset(client, "tiny", 1)
    one = client.post(f"/v1/datasets/{tiny}/snapshots", json={}).json()
    empty_split = client.get(
        f"/v1/datasets/{tiny}/export",
        params={"format": "openai", "snapshot": one["id"], "split": "validation"},
    )
    assert empty_split.status_code == 400 and "no validation items" in empty_split.json()["detail"]
    reviewer = bearer(new_user_token(client, Role.reviewer))
    refused = client.get(url, params={"format": "alpaca"}, headers=reviewer)
    assert refused.status_code == 403 and "finetune" in refused.json()["detail"]
    service = bearer(new_user_token(client, Role.service))
    assert client.get(url, params={"format": "alpaca"}, headers=service).status_code == 200


# --- streaming ----------------------------------------------------------------------------------------------------


class PageCounter:
    """Counts the statements that read a page of items (or of a snapshot's copy) through an engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pages = 0

    def __enter__(self) -> PageCounter:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement: str, *_: object) -> None:  # noqa: ANN001
        if re.search(r"FROM (item|snapshot_item)\b.*ORDER BY .*LIMIT", statement, re.S):
            self.pages += 1


def test_a_large_export_streams_and_reads_its_items_in_pages(client) -> None:
    n = 3500
    dataset_id = _dataset(client, "large", n, pending=50)
    sessions: sessionmaker[Session] = client.app.state.sessions
    engine = sessions.kw["bind"]
    # Over HTTP: the body arrives in many chunks, and the items were read in pages of 1,000 (4 + the empty one).
    with (
        PageCounter(engine) as counter,
        client.stream("GET", f"/v1/datasets/{dataset_id}/export", params={"format": "openai"}) as answer,
    ):
        assert answer.status_code == 200
        chunks = list(answer.iter_bytes())
    assert len(chunks) > 1
    body = b"".join(chunks)
    assert len(body.splitlines()) == n
    assert counter.pages == 5

    # The stream itself: its first chunk is ready after a few pages, long before the last page is read.
    source = ExportSource(dataset_id)
    with PageCounter(engine) as counter:
        stream: Iterator[bytes] = exports.stream_text(sessions, source, "alpaca", page_size=250)
        assert counter.pages == 0  # nothing is read before the body is asked for
        first = next(stream)  # one 64 KiB chunk: the records of about three pages
        assert 1 <= counter.pages <= 4 and first.startswith(b"[\n")
        rest = b"".join(stream)
        assert counter.pages == n // 250 + 1
    assert len(json.loads(first + rest)) == n
    assert len(first) < 70_000  # a chunk is about 64 KiB, whatever the size of the export


# --- the CLI ------------------------------------------------------------------------------------------------------


@pytest.fixture
def cli_database(sessions, database_url, monkeypatch) -> sessionmaker[Session]:
    monkeypatch.setenv("SPROUT_DATABASE_URL", database_url)
    for console in (common.console, common.err):
        monkeypatch.setattr(console, "width", 200)
    get_settings.cache_clear()
    yield sessions
    get_settings.cache_clear()


def test_the_cli_writes_every_format(cli_database, tmp_path) -> None:
    sessions = cli_database
    with transaction(sessions) as session:
        dataset_id = create_dataset(session, "cli set").id
        add_items(session, dataset_id, 11)
        add_items(session, dataset_id, 4, ItemStatus.rejected)
    with sessions() as session:
        items = [as_record(i) for i in approved(session, dataset_id)]
    for fmt in ("alpaca", "sharegpt", "openai"):
        out = tmp_path / f"out-{fmt}{formats.EXTENSIONS[fmt]}"
        result = runner.invoke(cli_app, ["export", "cli set", "--format", fmt, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "exported 11 items" in result.output
        data = out.read_bytes()
        parsed = [json.loads(line) for line in data.splitlines()] if fmt == "openai" else json.loads(data)
        assert parsed == [formats.CONVERTERS[fmt](r) for r in items]
    by_id = runner.invoke(
        cli_app, ["export", str(dataset_id), "-f", "parquet", "-o", str(tmp_path / "p.parquet")]
    )
    assert by_id.exit_code == 0, by_id.output
    assert pq.read_table(tmp_path / "p.parquet").to_pylist() == [formats.table_row(r) for r in items]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left

    for args, message in (
        (["export", "nope", "-f", "alpaca", "-o", str(tmp_path / "x.json")], "dataset 'nope' not found"),
        (["export", "cli set", "-f", "csv", "-o", str(tmp_path / "x.csv")], "--format: unknown format"),
        (
            ["export", "cli set", "-f", "alpaca", "-o", str(tmp_path / "x"), "--split", "train"],
            "only in a snapshot",
        ),
        (["export", "cli set", "-f", "alpaca", "-o", str(tmp_path / "x"), "--snapshot", "99"], "snapshot 99"),
    ):
        result = runner.invoke(cli_app, args)
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "x").exists()


def test_the_cli_writes_a_hugging_face_dataset_with_its_card(cli_database, tmp_path) -> None:
    from datasets import load_dataset, load_from_disk

    sessions = cli_database
    with transaction(sessions) as session:
        dataset_id = create_dataset(session, "hf set").id
        add_items(session, dataset_id, 20)
        snapshot = create_snapshot(session, dataset_id, created_by="t", seed=4, validation_fraction=0.25)
        empty_id = create_dataset(session, "nothing yet").id
        add_items(session, empty_id, 2, ItemStatus.pending)

    live = tmp_path / "live"
    result = runner.invoke(cli_app, ["export", "hf set", "--format", "hf", "--out", str(live)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in live.iterdir()} == {"README.md", "data", "dataset_dict.json", "train"}
    loaded = load_from_disk(str(live))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == 20
    assert set(loaded["train"].column_names) == set(formats.TABLE_COLUMNS)
    assert pq.read_table(live / "data" / "train-00000-of-00001.parquet").num_rows == 20
    card = (live / "README.md").read_text()
    assert "20 approved items" in card and "| zh | 10 |" in card and "| latin | 10 |" in card
    assert "- zh" in card and "| qwen | 10 |" in card and "| unknown | 10 |" in card

    snap = tmp_path / "snap"
    result = runner.invoke(
        cli_app, ["export", "hf set", "-f", "hf", "-o", str(snap), "--snapshot", str(snapshot.id)]
    )
    assert result.exit_code == 0, result.output
    loaded = load_from_disk(str(snap))
    assert {k: v.num_rows for k, v in loaded.items()} == {"train": 15, "validation": 5}
    via_card = load_dataset(str(snap), cache_dir=str(tmp_path / "cache"))
    assert {k: v.num_rows for k, v in via_card.items()} == {"train": 15, "validation": 5}
    assert sorted(via_card["validation"]["item_id"]) == sorted(loaded["validation"]["item_id"])
    card = (snap / "README.md").read_text()
    assert snapshot.content_hash in card and "| validation | 5 |" in card and "split seed: 4" in card

    only = tmp_path / "only-validation"
    result = runner.invoke(
        cli_app,
        [
            "export",
            "hf set",
            "-f",
            "hf",
            "-o",
            str(only),
            "--snapshot",
            str(snapshot.id),
            "--split",
            "validation",
        ],
    )
    assert result.exit_code == 0 and list(load_from_disk(str(only))) == ["validation"]

    again = runner.invoke(cli_app, ["export", "hf set", "-f", "hf", "-o", str(live)])
    assert again.exit_code == 2 and "not an empty directory" in again.output
    empty = runner.invoke(cli_app, ["export", "nothing yet", "-f", "hf", "-o", str(tmp_path / "e")])
    assert empty.exit_code == 2 and "no approved items" in empty.output and not (tmp_path / "e").exists()
