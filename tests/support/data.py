"""Real instruction texts for tests that need many distinct items (from ../shared/data, never copied here)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def spread_instructions(shared_data: Path, count: int, *, stride: int = 60) -> list[str]:
    """`count` real instructions taken every `stride` lines of the bench file: neighbouring lines share
    templates and would be near-duplicates of each other, lines far apart mostly are not."""
    texts: list[str] = []
    with gzip.open(shared_data / "bench_instructions.jsonl.gz", "rt", encoding="utf-8") as handle:
        for n, line in enumerate(handle):
            if n % stride == 0:
                texts.append(json.loads(line)["instruction"])
                if len(texts) == count:
                    break
    return texts


def alpaca_jsonl(texts: list[str]) -> bytes:
    """An Alpaca JSONL file of these instructions, each with a plausible output (what the import endpoint takes)."""
    rows = ({"instruction": t, "input": "", "output": f"An answer to: {t[:60]}"} for t in texts)
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
