"""Which items the item list and the review queue show, on SQLite and PostgreSQL: the language, text, job and
import filters (LIKE metacharacters in the text match literally), the "most doubtful first" order (the nearest
neighbour's ROUGE-L, highest first, no neighbour as 0, then newest first), and keyset pages that, walked to the
end, give every matching item exactly once; a cursor that is not one of ours is a 422 naming `cursor`."""

from __future__ import annotations

import base64
import gzip
import json
from collections import Counter

from tests.integration.review.conftest import (
    CHINESE_TASKS,
    TASKS,
    alpaca,
    import_records,
    import_tasks,
    new_dataset,
    new_person,
)
from tests.support.scripted_backend import ScriptedBackend
from tests.support.service import all_items, make_settings, running_service, wait_for_job

SEEDS = "\n".join(
    json.dumps({"instruction": i, "instances": [{"input": "", "output": o}], "is_classification": False})
    for i, o in TASKS[:3]
).encode()
JOB_TASKS = [
    ("Describe the water cycle for a ten-year-old pupil.", "Water evaporates, forms clouds, falls as rain."),
    ("Suggest two indoor hobbies for a rainy weekend.", "Knitting and board games."),
]
REPLY = json.dumps({"tasks": [{"instruction": i, "input": "", "output": o} for i, o in JOB_TASKS]})
# Texts with LIKE's metacharacters, and neighbours they would match if those were not escaped.
LITERAL_TASKS = [
    ("Explain what a 100% discount means for shoppers.", "It is free."),
    ("Estimate how many grains of rice weigh 1000 grams.", "About fifty thousand."),
    ("Convert the phrase into snake_case style naming.", "like_this"),
    ("Describe a snake case study from zoology lectures.", "A python that swallowed an egg."),
    ("Explain the path C:\\Users\\Public on Windows.", "A shared folder."),
    ("Which river flows through Cairo?", "The Nile; see the notes in the 5%_rule appendix."),
]


def forged_cursor(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


NOT_OUR_CURSORS = [
    "not-a-cursor",
    "!!!!",
    forged_cursor({"s": "oldest", "k": [1]}),  # a cursor of another sort
    forged_cursor({"s": "doubtful", "k": [0.5]}),
    forged_cursor({"s": "doubtful", "k": ["x", 1]}),
    forged_cursor({"s": "doubtful", "k": [0.5, 1.5]}),
    forged_cursor({"s": "doubtful", "k": [0.5, 10**30]}),  # no id is that large
    forged_cursor({"s": "doubtful", "k": [float("nan"), 1]}),
    forged_cursor({"s": "doubtful", "k": [0.5, True]}),
    forged_cursor([1, 2]),
    forged_cursor("doubtful"),
]


def page_through(client, dataset_id: int, **params) -> list[dict]:
    """Every page of a listing, with a small page size so that there are many."""
    items, cursor, pages = [], None, 0
    while True:
        response = client.get(
            f"/v1/datasets/{dataset_id}/items",
            params={"limit": 7, **params, **({"cursor": cursor} if cursor else {})},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["data"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            assert pages > 1 or len(items) <= 7
            return items


def instructions(items: list[dict]) -> list[str]:
    return [i["instruction"] for i in items]


def doubt_order(items: list[dict]) -> list[int]:
    """Most doubtful first: the neighbour's ROUGE-L, highest first (none counts as 0), then the newest first."""

    def key(item: dict) -> tuple[float, int]:
        rouge = item["nearest"]["rouge_l"] if item["nearest"] else None
        return (-(rouge or 0.0), -item["id"])

    return [i["id"] for i in sorted(items, key=key)]


def test_language_text_job_and_import_filters(database_url) -> None:
    backend = ScriptedBackend(lambda _prompt: REPLY)
    with running_service(make_settings(database_url), backend) as client:
        dataset_id = new_dataset(client)
        seeds = client.post(f"/v1/datasets/{dataset_id}/seeds", files={"file": ("s.jsonl", SEEDS)})
        assert seeds.status_code == 201, seeds.text
        job = client.post(
            f"/v1/datasets/{dataset_id}/generations", json={"count": 2, "prompts_per_request": 1}
        )
        assert job.status_code == 202, job.text
        job = wait_for_job(client, job.json()["id"])
        assert job["status"] == "succeeded" and job["counters"]["accepted"] == 2, job
        latin = import_tasks(client, dataset_id, TASKS[3:9])
        chinese = import_tasks(client, dataset_id, CHINESE_TASKS)
        literal = import_tasks(client, dataset_id, LITERAL_TASKS)
        url = f"/v1/datasets/{dataset_id}/items"

        def listed(**params) -> list[str]:
            return instructions(all_items(client, dataset_id, **params))

        # Language: set per item from its instruction's script.
        assert listed(language="zh") == [i for i, _ in CHINESE_TASKS]
        assert sorted(listed(language="latin")) == sorted(
            i for i, _ in [*JOB_TASKS, *TASKS[3:9], *LITERAL_TASKS]
        )
        assert client.get(url, params={"language": "klingon"}).status_code == 422

        # Job and import: exactly their own items.
        assert sorted(listed(job_id=job["id"])) == sorted(i for i, _ in JOB_TASKS)
        assert listed(import_id=latin[0]["import_id"]) == instructions(latin)
        assert listed(import_id=chinese[0]["import_id"], language="latin") == []

        # Text: a substring of the instruction, input or output, case-insensitive, metacharacters literal.
        assert listed(q="100%") == [LITERAL_TASKS[0][0]]
        assert listed(q="snake_case") == [LITERAL_TASKS[2][0]]
        assert listed(q="SNAKE_CASE") == [LITERAL_TASKS[2][0]]
        assert listed(q="a snake_case") == []  # "a snake case" would match an unescaped "_"
        assert listed(q="%") == [LITERAL_TASKS[0][0], LITERAL_TASKS[5][0]]
        assert listed(q="_") == [LITERAL_TASKS[2][0], LITERAL_TASKS[5][0]]
        assert listed(q="5%_") == [LITERAL_TASKS[5][0]]  # found in the output
        assert listed(q="\\Users") == [LITERAL_TASKS[4][0]]
        assert listed(q="天空") == [CHINESE_TASKS[1][0]]
        assert listed(q="nile", language="latin") == [LITERAL_TASKS[5][0]]
        total = client.get(url, params={"q": "%", "count": True, "limit": 1}).json()
        assert total["total"] == 2 and len(total["data"]) == 1 and total["next_cursor"]

        # The queue takes the same filters (each reviewer below holds nothing yet).
        claims = {
            "zh": new_person(client).claim(dataset_id, 10, filters={"language": "zh"}),
            "job": new_person(client).claim(dataset_id, 10, filters={"job_id": job["id"]}),
            "underscore": new_person(client).claim(dataset_id, 10, sort="oldest", filters={"q": "_"}),
            "percent": new_person(client).claim(
                dataset_id, 10, filters={"q": "100%", "import_id": literal[0]["import_id"]}
            ),
        }
        # No neighbours, so "most doubtful first" is newest first.
        assert instructions(claims["zh"]) == [i for i, _ in reversed(CHINESE_TASKS)]
        assert sorted(instructions(claims["job"])) == sorted(i for i, _ in JOB_TASKS)
        assert instructions(claims["underscore"]) == [LITERAL_TASKS[2][0], LITERAL_TASKS[5][0]]
        assert instructions(claims["percent"]) == [LITERAL_TASKS[0][0]]
        reviewer = new_person(client)
        assert reviewer.claim(dataset_id, 10, filters={"language": "zh"}) == []  # all held by someone
        bad = reviewer.post(f"/v1/datasets/{dataset_id}/review/claim", {"filters": {"language": "klingon"}})
        assert bad.status_code == 422


def test_doubtful_order_and_keyset_pages_cover_every_item_once(database_url, shared_data) -> None:
    with running_service(make_settings(database_url)) as client:
        dataset_id = new_dataset(client)
        # Neighbouring lines of the benchmark file share templates: a mix of near-duplicates (filtered, ROUGE-L
        # above 0.7), close neighbours (pending, 0.6 to 0.7) and items with no neighbour worth naming.
        texts = []
        with gzip.open(shared_data / "bench_instructions.jsonl.gz", "rt", encoding="utf-8") as handle:
            for line in handle:
                text = json.loads(line)["instruction"]
                if "\n" not in text and 5 <= len(text.split()) <= 40:
                    texts.append(text)
                if len(texts) == 160:
                    break
        import_records(
            client, dataset_id, [{"instruction": t, "input": "", "output": "An answer."} for t in texts]
        )
        import_records(client, dataset_id, alpaca(TASKS[:5]))
        everything = all_items(client, dataset_id)
        scores = Counter(
            ("none" if not i["nearest"] else "high" if i["nearest"]["rouge_l"] > 0.7 else "close")
            for i in everything
        )
        assert min(scores.values()) >= 5 and len(scores) == 3, scores  # the order has something to sort
        ties = Counter(i["nearest"]["rouge_l"] for i in everything if i["nearest"])
        assert max(ties.values()) > 1  # equal scores: the id breaks the tie

        walked = page_through(client, dataset_id, sort="doubtful")
        assert [i["id"] for i in walked] == doubt_order(everything)
        pending = [i for i in everything if i["status"] == "pending"]
        walked = page_through(client, dataset_id, sort="doubtful", status="pending")
        assert [i["id"] for i in walked] == doubt_order(pending)
        assert [i["id"] for i in page_through(client, dataset_id, sort="newest")] == sorted(
            (i["id"] for i in everything), reverse=True
        )
        assert [
            i["id"] for i in page_through(client, dataset_id, sort="oldest", status="filtered")
        ] == sorted(i["id"] for i in everything if i["status"] == "filtered")

        # The queue hands out the most doubtful pending items first, in that order, and then the next ones.
        reviewer = new_person(client)
        first = reviewer.claim(dataset_id, 10)
        assert [i["id"] for i in first] == doubt_order(pending)[:10]
        # Each comes with its nearest neighbour's text and the difference from it to the item's instruction.
        by_id = {i["id"]: i for i in everything}
        neighbour = first[0]["neighbour"]
        assert (neighbour["kind"], neighbour["id"]) == (
            first[0]["nearest"]["kind"],
            first[0]["nearest"]["id"],
        )
        assert neighbour["text"] == by_id[neighbour["id"]]["instruction"]
        assert "".join(s["text"] for s in neighbour["diff"] if s["op"] != "insert") == neighbour["text"]
        assert "".join(s["text"] for s in neighbour["diff"] if s["op"] != "delete") == first[0]["instruction"]
        assert any(s["op"] != "equal" for s in neighbour["diff"])
        assert new_person(client).claim_ids(dataset_id, 10, sort="doubtful") == doubt_order(pending)[10:20]

        # A cursor of another listing, or not one of ours at all, is a 422 that names it.
        oldest = client.get(f"/v1/datasets/{dataset_id}/items", params={"limit": 2}).json()["next_cursor"]
        for bad in [oldest, *NOT_OUR_CURSORS]:
            response = client.get(
                f"/v1/datasets/{dataset_id}/items", params={"sort": "doubtful", "cursor": bad}
            )
            assert response.status_code == 422, (bad, response.text)
            assert response.json()["detail"][0]["loc"][-1] == "cursor"


def test_a_text_search_with_a_nul_or_quotes_is_just_text(database_url: str) -> None:
    """The search term is rendered into the statement (so PostgreSQL plans it with its trigram indexes): quotes
    stay text, and a NUL is dropped as it is from stored text, on both databases."""
    with running_service(make_settings(database_url)) as client:
        dataset_id = client.post("/v1/datasets", json={"name": "quotes"}).json()["id"]
        records = [
            {
                "instruction": "Explain why it's five o'clock somewhere, in one line.",
                "input": "",
                "output": "Time zones.",
            }
        ]
        client.post(
            f"/v1/datasets/{dataset_id}/items/import",
            files={"file": ("q.jsonl", "\n".join(json.dumps(r) for r in records).encode())},
        )
        for term, hits in (("o'clock", 1), ("'; DROP TABLE item; --", 0), ("five\x00 o", 1), ("it's", 1)):
            response = client.get(f"/v1/datasets/{dataset_id}/items", params={"q": term})
            assert response.status_code == 200, (term, response.text)
            assert len(response.json()["data"]) == hits, term
        assert client.get(f"/v1/datasets/{dataset_id}/items").json()["data"]  # the table is still there
