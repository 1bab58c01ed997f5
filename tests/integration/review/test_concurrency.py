"""Twenty reviewers claiming and deciding in parallel, over real HTTP, on SQLite and on PostgreSQL: every item is
decided exactly once (or answered by exactly k reviewers), none is lost, and none is held by two reviewers at once.

Leases are long (nothing expires during the test), so an item handed to two reviewers at any time would show up
in two reviewers' claim answers: the test checks that the sets are disjoint (k = 1), or that no reviewer got an
item twice and no item went to more than k reviewers (k = 2).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.auth.roles import Role
from app.auth.service import create_token, create_user
from app.core.db import transaction
from app.generation.models import Item, ItemStatus
from app.review.models import ReviewAction, ReviewClaim, ReviewEvent, ReviewResponse
from tests.support.app_server import serving
from tests.support.data import alpaca_jsonl, spread_instructions
from tests.support.service import make_settings

pytestmark = pytest.mark.slow

REVIEWERS = 20


def _reviewer(base_url: str, token: str, dataset_id: int, seed: int, log: dict[str, list]) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60.0, trust_env=False) as client:
        while True:
            claimed = client.post(
                f"/v1/datasets/{dataset_id}/review/claim", json={"n": 5, "sort": "doubtful"}
            )
            if claimed.status_code != 200:
                log["errors"].append(("claim", claimed.status_code, claimed.text))
                return
            items = claimed.json()["items"]
            log["claimed"].extend(i["id"] for i in items)
            if not items:
                return
            for item in items:
                body = {"decision": "approve", "version": item["version"]}
                if rng.random() < 0.3:
                    body = {"decision": "reject", "version": item["version"], "reason": "low_quality"}
                decided = client.post(f"/v1/items/{item['id']}/review", json=body)
                if decided.status_code != 200:
                    log["errors"].append(("decide", decided.status_code, decided.text))
                else:
                    log["decided"].append(item["id"])


@pytest.mark.parametrize("overlap", [1, 2])
def test_twenty_reviewers_in_parallel(database_url: str, shared_data: Path, overlap: int) -> None:
    settings = make_settings(database_url, worker_enabled=False)
    with serving(settings) as served:
        sessions = served.app.state.sessions
        with transaction(sessions) as session:
            admin = create_user(session, "admin", Role.admin)
            admin_token, _ = create_token(session, admin)
            tokens = [
                create_token(session, create_user(session, f"r{n}", Role.reviewer))[0]
                for n in range(REVIEWERS)
            ]
        headers = {"Authorization": f"Bearer {admin_token}"}
        with httpx.Client(
            base_url=served.base_url, headers=headers, timeout=60.0, trust_env=False
        ) as admin_client:
            dataset_id = admin_client.post("/v1/datasets", json={"name": "parallel"}).json()["id"]
            put = admin_client.put(
                f"/v1/datasets/{dataset_id}/review/settings",
                json={"overlap": overlap, "reject_reasons": ["low_quality", "other"]},
            )
            assert put.status_code == 200, put.text
            imported = admin_client.post(
                f"/v1/datasets/{dataset_id}/items/import",
                files={"file": ("data.jsonl", alpaca_jsonl(spread_instructions(shared_data, 400)))},
            ).json()
        pending = imported["accepted"]
        assert pending >= 100, imported  # enough work for twenty reviewers to collide

        logs = [{"claimed": [], "decided": [], "errors": []} for _ in range(REVIEWERS)]
        threads = [
            threading.Thread(target=_reviewer, args=(served.base_url, tokens[n], dataset_id, n, logs[n]))
            for n in range(REVIEWERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert not any(t.is_alive() for t in threads)

        with sessions() as session:
            statuses = Counter(
                dict(
                    session.execute(
                        select(Item.status, func.count())
                        .where(Item.dataset_id == dataset_id)
                        .group_by(Item.status)
                    ).all()
                )
            )
            answers = Counter(
                session.scalars(select(ReviewResponse.item_id).where(ReviewResponse.dataset_id == dataset_id))
            )
            decisions = Counter(
                session.scalars(
                    select(ReviewEvent.item_id).where(
                        ReviewEvent.dataset_id == dataset_id,
                        ReviewEvent.action.in_(
                            [ReviewAction.approve, ReviewAction.reject, ReviewAction.dispute]
                        ),
                    )
                )
            )

    errors = [e for log in logs for e in log["errors"]]
    assert errors == []
    # Nothing lost: no item left pending; every item reached its end exactly once.
    assert statuses[ItemStatus.pending] == 0
    decided_items = (
        statuses[ItemStatus.approved] + statuses[ItemStatus.rejected] + statuses[ItemStatus.disputed]
    )
    assert decided_items == pending
    assert len(decisions) == pending and set(decisions.values()) == {1}
    # Every item got exactly k answers, from k different reviewers.
    assert len(answers) == pending and set(answers.values()) == {overlap}
    per_reviewer = [Counter(log["claimed"]) for log in logs]
    assert all(max(c.values(), default=1) == 1 for c in per_reviewer)  # nobody was handed an item twice
    holders = Counter(item for claimed in per_reviewer for item in claimed)
    assert max(holders.values()) == overlap  # never more reviewers on an item than it needs...
    assert sum(holders.values()) == pending * overlap  # ...and every claim led to an answer
    assert sum(len(log["decided"]) for log in logs) == pending * overlap
    # The work really was spread: most reviewers got items (the test would be vacuous with one worker).
    assert sum(1 for log in logs if log["decided"]) >= REVIEWERS // 2


def test_one_reviewer_claiming_from_many_tabs_at_once(database_url: str, shared_data: Path) -> None:
    """Claims of one reviewer that overlap in time (tabs, retries) all succeed, and every item they hand out is
    held by that reviewer's one claim on it."""
    settings = make_settings(database_url, worker_enabled=False)
    with serving(settings) as served:
        with transaction(served.app.state.sessions) as session:
            admin_token, _ = create_token(session, create_user(session, "admin", Role.admin))
            token, _ = create_token(session, create_user(session, "tabs", Role.reviewer))
        admin = {"Authorization": f"Bearer {admin_token}"}
        with httpx.Client(base_url=served.base_url, headers=admin, timeout=60.0, trust_env=False) as client:
            dataset_id = client.post("/v1/datasets", json={"name": "tabs"}).json()["id"]
            client.post(
                f"/v1/datasets/{dataset_id}/items/import",
                files={"file": ("data.jsonl", alpaca_jsonl(spread_instructions(shared_data, 200)))},
            ).raise_for_status()
        answers: list[httpx.Response] = []

        def tab(n: int) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=served.base_url, headers=headers, timeout=60.0, trust_env=False) as c:
                for _ in range(6):
                    answers.append(
                        c.post(f"/v1/datasets/{dataset_id}/review/claim", json={"n": 5 + n, "sort": "oldest"})
                    )

        threads = [threading.Thread(target=tab, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        with served.app.state.sessions() as session:
            held = list(
                session.scalars(select(ReviewClaim.item_id).where(ReviewClaim.dataset_id == dataset_id))
            )

    assert [a.status_code for a in answers] == [200] * 36, [a.text for a in answers if a.status_code != 200]
    handed = [[i["id"] for i in a.json()["items"]] for a in answers]
    assert all(0 < len(ids) == len(set(ids)) for ids in handed)
    # Nothing expires or is decided here, so every item handed to a tab is still held, by one claim.
    assert {i for ids in handed for i in ids} <= set(held) and len(held) == len(set(held))
