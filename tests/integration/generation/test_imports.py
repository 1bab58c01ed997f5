"""Bring your own data: instruction files (Alpaca, ShareGPT, OpenAI chat) become items through the same filters and
near-duplicate index as generated ones, with every drop explained; a bad file imports nothing and says where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from typer.testing import CliRunner

from app.cli import app as cli
from app.core.config import get_settings
from app.generation.models import Item
from tests.support.service import all_items, make_settings, running_service

SEEDS = [
    {
        "instruction": "Write a haiku about the sea at night.",
        "instances": [{"input": "", "output": "Waves..."}],
    }
]


def _alpaca(*rows: tuple[str, str, str]) -> bytes:
    return "\n".join(
        json.dumps({"instruction": i, "input": n, "output": o}, ensure_ascii=False) for i, n, o in rows
    ).encode()


@pytest.fixture
def client(database_url: str):
    with running_service(make_settings(database_url, worker_enabled=False)) as client:
        yield client


def _dataset(client) -> int:  # noqa: ANN001
    dataset_id = client.post("/v1/datasets", json={"name": "mine"}).json()["id"]
    seeds = "\n".join(json.dumps(s) for s in SEEDS).encode()
    assert (
        client.post(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("s.jsonl", seeds)}).status_code == 201
    )
    return dataset_id


def test_an_alpaca_file_becomes_items_with_every_drop_explained(client) -> None:  # noqa: ANN001
    dataset_id = _dataset(client)
    data = _alpaca(
        ("翻译成英文：你好", "", "Hello"),
        ("Summarise the story of Hamlet in three sentences.", "", "A prince avenges his father..."),
        (
            "Summarise the story of Hamlet in three short sentences.",
            "",
            "Again.",
        ),  # near-duplicate of the line above
        (
            "Write a haiku about the sea at night, please.",
            "",
            "Dark waves hum.",
        ),  # near-duplicate of the seed
        ("Hi", "", "Hello"),  # too short
        ("Draw a picture of a cat for me please.", "", "..."),  # needs more than text
        ("List three prime numbers greater than ten.", "", "   "),  # empty output
    )
    response = client.post(f"/v1/datasets/{dataset_id}/items/import", files={"file": ("mine.jsonl", data)})
    assert response.status_code == 201, response.text
    done = response.json()
    assert done["status"] == "succeeded" and done["records"] == done["done"] == 7
    assert (done["accepted"], done["duplicates"]) == (2, 2)
    assert done["filtered"] == {"instruction_too_short": 1, "blocklisted_keyword": 1, "empty_output": 1}

    items = {i["instruction"]: i for i in all_items(client, dataset_id)}
    assert len(items) == 7 and all(
        i["import_id"] == done["id"] and i["job_id"] is None for i in items.values()
    )
    assert items["翻译成英文：你好"]["status"] == "pending" and items["翻译成英文：你好"]["language"] == "zh"
    hamlet = items["Summarise the story of Hamlet in three sentences."]
    again = items["Summarise the story of Hamlet in three short sentences."]
    assert again["filter_reason"] == "near_duplicate" and again["nearest"]["id"] == hamlet["id"]
    seedlike = items["Write a haiku about the sea at night, please."]
    assert seedlike["filter_reason"] == "near_duplicate" and seedlike["nearest"]["kind"] == "seed"
    assert client.get(f"/v1/imports/{done['id']}").json() == done
    assert [i["id"] for i in client.get(f"/v1/datasets/{dataset_id}/imports").json()] == [done["id"]]
    pending = client.get(
        f"/v1/datasets/{dataset_id}/items", params={"import_id": done["id"], "status": "pending"}
    )
    assert {i["instruction"] for i in pending.json()["data"]} == {"翻译成英文：你好", hamlet["instruction"]}

    # A second import of the same file adds nothing new: everything is a duplicate of the first or filtered.
    again_done = client.post(
        f"/v1/datasets/{dataset_id}/items/import", files={"file": ("mine.jsonl", data)}
    ).json()
    assert again_done["accepted"] == 0 and again_done["duplicates"] == 4


def test_sharegpt_and_openai_chat_files(client) -> None:  # noqa: ANN001
    dataset_id = _dataset(client)
    sharegpt = [
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": "Name the largest ocean on Earth."},
                {"from": "gpt", "value": "The Pacific."},
            ]
        }
    ]
    openai_chat = "\n".join(
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
            ensure_ascii=False,
        )
        for q, a in [
            ("用一句话解释光合作用。", "植物利用光能制造养分。"),
            ("Give one synonym for 'quick'.", "Fast."),
        ]
    )
    first = client.post(
        f"/v1/datasets/{dataset_id}/items/import",
        files={"file": ("chat.json", json.dumps(sharegpt).encode())},
    ).json()
    second = client.post(
        f"/v1/datasets/{dataset_id}/items/import",
        files={"file": ("chat.jsonl", openai_chat.encode())},
        data={"format": "openai"},
    ).json()
    assert (first["accepted"], second["accepted"]) == (1, 2)
    items = {i["instruction"]: i for i in all_items(client, dataset_id, status="pending")}
    assert items["Name the largest ocean on Earth."]["output"] == "The Pacific."
    assert items["用一句话解释光合作用。"]["language"] == "zh"


def test_a_bad_file_imports_nothing_and_names_the_line(client, database_url: str) -> None:  # noqa: ANN001
    dataset_id = _dataset(client)
    data = (
        _alpaca(("Explain recursion to a child.", "", "It calls itself."))
        + b'\n{"instruction": "No output here"}\n'
    )
    response = client.post(f"/v1/datasets/{dataset_id}/items/import", files={"file": ("bad.jsonl", data)})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["line"] == 2 and detail["field"] == "output" and "line 2" in detail["message"]
    assert client.get(f"/v1/datasets/{dataset_id}/imports").json() == []
    assert client.get(f"/v1/datasets/{dataset_id}/items").json()["data"] == []
    assert client.post("/v1/datasets/999/items/import", files={"file": ("x.jsonl", data)}).status_code == 404


def test_the_cli_imports_with_a_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SPROUT_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        file = tmp_path / "mine.jsonl"
        file.write_bytes(
            _alpaca(("Describe a rainy afternoon in Paris.", "", "Grey and calm."), ("Hi", "", "x"))
        )
        result = CliRunner().invoke(cli, ["import-items", str(file), "--dataset", "own"])
        assert result.exit_code == 0, result.output
        assert "instruction_too_short 1" in result.output
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"instruction": "x"', encoding="utf-8")
        refused = CliRunner().invoke(cli, ["import-items", str(bad), "--dataset", "own"])
        assert refused.exit_code == 2 and "nothing was imported" in refused.output
    finally:
        get_settings.cache_clear()
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(
            select(Item.instruction, Item.status, Item.filter_reason).order_by(Item.id)
        ).all()
        counts = dict(conn.execute(text("SELECT status, sum(n) FROM item_count GROUP BY status")).all())
        assert conn.execute(select(func.count()).select_from(Item)).scalar() == 2
    engine.dispose()
    assert [tuple(r) for r in stored] == [
        ("Describe a rainy afternoon in Paris.", "pending", None),
        ("Hi", "filtered", "instruction_too_short"),
    ]
    assert counts == {"pending": 1, "filtered": 1}
