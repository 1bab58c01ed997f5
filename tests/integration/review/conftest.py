"""Helpers of the review API tests: datasets filled through the import endpoint, reviewers as users of their own
(each with a bearer token), and reads of the database itself to check what the API says against it."""

from __future__ import annotations

import gzip
import json
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session, sessionmaker

from app.auth.roles import Role
from app.core.db import create_db_engine, make_session_factory
from tests.support.service import all_items, bearer, new_user_token

# Distinct tasks (different words, not only different numbers), so the near-duplicate index keeps them all.
TASKS: tuple[tuple[str, str], ...] = (
    ("Explain why the sky looks blue during the day.", "Air scatters blue sunlight more than red."),
    ("Give three tips for staying focused while studying.", "Silence the phone, work in blocks, rest."),
    ("Name the largest planet in our solar system.", "Jupiter."),
    ("Translate 'good morning' into Spanish.", "Buenos días."),
    (
        "Summarize the story of Romeo and Juliet in one sentence.",
        "Two young lovers from feuding families die.",
    ),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees Celsius."),
    ("Suggest a healthy breakfast for a busy weekday morning.", "Oatmeal with fruit and nuts."),
    ("Classify the sentiment of this review as positive or negative.", "negative"),
    ("List four countries that border Germany.", "France, Poland, Austria, Denmark."),
    ("Describe how photosynthesis converts sunlight into chemical energy.", "Chlorophyll captures light."),
    ("Convert 5 kilometres to miles, rounded to two decimals.", "3.11 miles."),
    ("Recommend a novel for someone who enjoys mystery stories.", "The Hound of the Baskervilles."),
    ("Why do cats purr when they are content?", "Purring signals comfort and helps healing."),
    ("Compose a haiku about autumn leaves falling.", "Red leaves drift slowly / ..."),
    ("Identify the verb in the sentence: The dog barked loudly.", "barked"),
    ("How many continents are there on Earth?", "Seven."),
    ("Offer advice to a beginner learning to play chess.", "Control the centre and develop pieces early."),
    ("Define the term inflation in economics.", "A general rise in prices over time."),
    ("Propose a catchy name for a neighbourhood bakery.", "Rise and Shine Bakery."),
    ("Which gas do humans exhale after breathing?", "Carbon dioxide."),
    ("Rewrite this sentence in the passive voice: Tom painted the fence.", "The fence was painted by Tom."),
    ("Estimate how long it takes to walk ten kilometres.", "About two hours."),
    (
        "Tell a short joke suitable for children.",
        "Why did the banana go to the doctor? It wasn't peeling well.",
    ),
    ("Outline the main causes of the First World War.", "Militarism, alliances, imperialism, nationalism."),
)
CHINESE_TASKS: tuple[tuple[str, str], ...] = (
    ("写一首关于冬天大海的短诗。", "冬海无声，浪花如雪。"),
    ("请解释为什么天空是蓝色的。", "因为大气散射蓝光。"),
    ("列举三种常见的水果。", "苹果、香蕉、橙子。"),
)


def records_file(records: Iterable[dict[str, str]]) -> bytes:
    """Alpaca JSONL."""
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode()


def alpaca(tasks: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"instruction": i, "input": "", "output": o} for i, o in tasks]


def bench_instructions(shared_data: Path, count: int) -> list[str]:
    """`count` real instructions from the benchmark file, one-liners of a plain length whose first words differ
    (lines of one template share their opening, and would be dropped as near-duplicates)."""
    openings: set[str] = set()
    picked: list[str] = []
    with gzip.open(shared_data / "bench_instructions.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            text = json.loads(line)["instruction"].strip()
            words = text.split()
            opening = " ".join(words[:4]).lower()
            if (
                "\n" in text
                or not 6 <= len(words) <= 40
                or not re.match("[A-Za-z]", text)
                or opening in openings
            ):
                continue
            openings.add(opening)
            picked.append(text)
            if len(picked) == count:
                return picked
    raise AssertionError(f"only {len(picked)} usable instructions in the benchmark file")


@dataclass
class Person:
    """One user of the service, speaking through the shared TestClient with their own token."""

    client: TestClient
    name: str
    headers: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.client.get(path, headers=self.headers, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Response:
        return self.client.post(path, json=body, headers=self.headers, **kwargs)

    def put(self, path: str, body: Any = None) -> Response:
        return self.client.put(path, json=body, headers=self.headers)

    def claim(self, dataset_id: int, n: int = 10, **body: Any) -> list[dict[str, Any]]:
        response = self.post(f"/v1/datasets/{dataset_id}/review/claim", {"n": n, **body})
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def claim_ids(self, dataset_id: int, n: int = 10, **body: Any) -> list[int]:
        return [i["id"] for i in self.claim(dataset_id, n, **body)]

    def renew(self, dataset_id: int, item_ids: list[int] | None = None) -> dict[str, Any]:
        response = self.post(f"/v1/datasets/{dataset_id}/review/renew", {"item_ids": item_ids})
        assert response.status_code == 200, response.text
        return response.json()

    def decide(self, item: dict[str, Any], decision: str = "approve", **body: Any) -> Response:
        """A decision on the item as this person saw it (its version goes with it)."""
        return self.post(
            f"/v1/items/{item['id']}/review", {"decision": decision, "version": item["version"], **body}
        )

    def approve(self, item: dict[str, Any], **body: Any) -> dict[str, Any]:
        response = self.decide(item, "approve", **body)
        assert response.status_code == 200, response.text
        return response.json()

    def reject(self, item: dict[str, Any], reason: str = "low_quality", **body: Any) -> dict[str, Any]:
        response = self.decide(item, "reject", reason=reason, **body)
        assert response.status_code == 200, response.text
        return response.json()

    def undo(self, dataset_id: int) -> Response:
        return self.post(f"/v1/datasets/{dataset_id}/review/undo")


def admin_of(client: TestClient) -> Person:
    """The admin the client of running_service speaks as."""
    return Person(client, client.get("/v1/me").json()["name"])


def new_person(client: TestClient, role: Role = Role.reviewer, name: str | None = None) -> Person:
    name = name or f"{role.value}-{uuid.uuid4().hex[:6]}"
    return Person(client, name, bearer(new_user_token(client, role, name)))


def new_dataset(client: TestClient, *, overlap: int | None = None, reasons: list[str] | None = None) -> int:
    response = client.post("/v1/datasets", json={"name": f"review-{uuid.uuid4().hex[:8]}"})
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    if overlap is not None or reasons is not None:
        body: dict[str, Any] = {"overlap": overlap or 1}
        if reasons is not None:
            body["reject_reasons"] = reasons
        put = client.put(f"/v1/datasets/{dataset_id}/review/settings", json=body)
        assert put.status_code == 200, put.text
    return dataset_id


def import_records(
    client: TestClient, dataset_id: int, records: list[dict[str, str]], filename: str = "items.jsonl"
) -> dict[str, Any]:
    response = client.post(
        f"/v1/datasets/{dataset_id}/items/import", files={"file": (filename, records_file(records))}
    )
    assert response.status_code == 201, response.text
    imported = response.json()
    assert imported["status"] == "succeeded", imported
    return imported


def import_tasks(
    client: TestClient, dataset_id: int, tasks: Iterable[tuple[str, str]] = TASKS
) -> list[dict[str, Any]]:
    """Import the tasks; every one must wait for review. The dataset's pending items, oldest first."""
    tasks = list(tasks)
    imported = import_records(client, dataset_id, alpaca(tasks))
    assert imported["accepted"] == len(tasks), imported
    return all_items(client, dataset_id, status="pending", import_id=imported["id"])


def item_of(client: TestClient, item_id: int) -> dict[str, Any]:
    response = client.get(f"/v1/items/{item_id}")
    assert response.status_code == 200, response.text
    return response.json()


def events_of(client: TestClient, item_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/v1/items/{item_id}/events")
    assert response.status_code == 200, response.text
    return response.json()


def progress_of(client: TestClient, dataset_id: int) -> dict[str, Any]:
    response = client.get(f"/v1/datasets/{dataset_id}/review/progress")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def database(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions of our own on the test's database, to check the API against the tables (open them once the
    service has migrated it)."""
    engine = create_db_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()
