"""Approved (or other) items written straight into a dataset, for tests of what is done with them afterwards
(snapshots, exports, auto-feed): Chinese, English and hostile texts in turn."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.generation.models import Item, ItemStatus

TEXTS = [
    ("翻译成英文：你好", "", "Hello", "zh"),
    ("Classify the sentiment of this review.", "The battery died after a day.", "negative", "latin"),
    ('Quote "this" </script> & that', "line\nbreak", '{"json": true}\n]', "latin"),
    ("写一首关于冬天大海的短诗。", "", "冬海无声，浪花如雪。", "zh"),
]


def add_items(
    session: Session,
    dataset_id: int,
    n: int,
    status: ItemStatus = ItemStatus.approved,
    *,
    model: str | None = "qwen",
    model_every: int = 3,
) -> list[int]:
    """n items in one INSERT (item i has `model` unless i is a multiple of `model_every`); their ids in order."""
    if n == 0:
        return []
    rows: list[dict[str, Any]] = []
    for i in range(n):
        instruction, input_, output, language = TEXTS[i % len(TEXTS)]
        rows.append(
            {
                "dataset_id": dataset_id,
                "instruction": f"{instruction} #{i}",
                "input": input_,
                "output": output,
                "language": language,
                "status": status,
                "model": model if i % model_every else None,
            }
        )
    session.execute(insert(Item), rows)
    found = session.scalars(
        select(Item.id).where(Item.dataset_id == dataset_id, Item.status == status).order_by(Item.id)
    )
    return list(found)[-n:]
