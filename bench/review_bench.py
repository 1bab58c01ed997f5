"""Benchmark of the review queue and the reviewer UI with 50,000 items, over HTTP, on PostgreSQL and SQLite.

Reviewers work in parallel against a dataset of 50,000 items, and every page is timed at 50,000 items next to
1,000, each measured side by side in one run (these machines are noisy).

The service is the real one: uvicorn serving app.main:create_app in a process of its own on a free loopback port
(worker disabled, SPROUT_WORKER_ENABLED=false; access log off), on PostgreSQL (a fresh database per run) or SQLite
(a temp file). Its database is filled directly, with SQLAlchemy Core bulk inserts (the item_count triggers keep
the counts exact for those too):
- texts: the real instructions of bench_instructions.jsonl.gz (shuffled, seeded; word-level mutants once they run
  out), plus 8% Chinese, 2% Japanese, 1% Korean and 2% mixed-script tasks from templates; outputs of varied shape
  and length (a sentence, paragraphs, numbered lists, code), an input for 30%; the language column is the app's
  own script rule (app.reports.language);
- nearest neighbours: none for 35% of the items, ROUGE-L 0.1-0.6 for 50% (an earlier item or a seed task), 0.6-0.7
  for 15% (a word-level mutant of the earlier item it points to): the "most doubtful first" sort has real work;
- 80% of the items come from four generation jobs (40/30/20/10%), 20% from one import;
- filtered items carry reasons (60% near_duplicate with a duplicate signal and ROUGE-L 0.7-1.0, the rest heuristic
  reasons) and decided items (pages only) carry their history: the reviewer's answer and the review event, 10% of
  approvals edited (original kept, before/after texts in the event), spread over the last 24 hours.
--reviewers users with the reviewer role (each with an API token) and an admin are made with app.auth.service.
PostgreSQL is VACUUMed and ANALYZEd after the load (what autovacuum does on a live server after a bulk load: among
other things it empties the pending lists of the trigram GIN indexes); SQLite is not (the app never runs ANALYZE).

1. Load (`--only pg`, `--only sqlite`). The dataset holds --items pending items (and 12% as many filtered ones).
   The reviewers run in a client process of their own (asyncio + httpx, one connection per reviewer in flight),
   each as the review page does (app/web/static/review.js): claim n=10 with sort "doubtful" and claim again
   whenever fewer than 3 of its items are left undecided; look at an item for about a second (uniform 0.5-1.5 s,
   each reviewer starting at a random point of its first second), then decide it: 85% approve, 10% reject with
   one of the dataset's reasons (half of them with a note), 5% edit-and-approve; renew the leases every third of
   the lease, as the page does. Paced run: --duration seconds. Saturation run: the same reviewers, no pause, for
   --saturation seconds; its decisions/s is the most the service sustains here.
   Recorded: the client-side latency of every claim, decision and renewal (full response read), decisions/s
   (successful decisions over the whole run, tail included), and errors: any 5xx, timeout (--timeout s) or
   transport error, and any other unexpected status. Every 409 counts as an error and is printed: a reviewer only
   ever decides items its claim gave it, so none can happen when the queue works. After each run the database is
   checked: decision events == the client's successful decisions, no item answered twice, no item claimed twice.
   CPU seconds of the server process and of the client process are recorded (2 cores are shared with PostgreSQL).
   On PostgreSQL, pg_stat_activity is sampled four times a second during each run: statements running, how many
   of them wait for a lock, which statements wait and what the sessions they wait behind are doing.
2. Pages (`--only pages`, on each of --page-databases). Two databases, one dataset each, of --small-items and
   --items items (68% pending, 12% filtered, 16% approved, 4% rejected), a server on each (same code), the admin's
   bearer token. Pages: /ui (datasets), /ui/datasets/{id} (progress), the review page shell, /ui/items/{id} (a
   pending item with a neighbour; an edited approved item with its history), and the queue page
   /ui/datasets/{id}/queue and the JSON list /v1/datasets/{id}/items for each filter (all statuses; pending;
   approved; pending + language zh; pending + the smallest job; filtered + near_duplicate; filtered +
   blocklisted_keyword; duplicate signal rouge_l; pending + text searches: a common English word (~4% of the
   instructions), a Chinese word, a rare word in ~0.2% of the outputs) under each sort (oldest, newest,
   doubtful), plus a deep keyset page per sort (a cursor 90% of the way into the pending items, as
   app.generation.item_query makes them). Each page: --page-warmup rounds not counted, then --page-repeats
   timed requests at each size; every round visits the pages in a new shuffled order and alternates which size
   goes first, so machine noise hits both sizes alike. Reported per page: p50/p95 at each size and the ratios;
   targets (issue 13): p95 <= 150 ms at 50K and p95(50K) / p95(1K) <= 1.3.

Usage (from the repository root; PostgreSQL as in the tests, SPROUT_TEST_POSTGRES_URL):
    .venv/bin/python bench/review_bench.py [--items 50000] [--reviewers 50] [--duration 60] [--saturation 30]
        [--only pg|sqlite|pages ...] [--out bench/results/review.json]
Writes bench/results/review.json (sections run alone merge into it) and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gzip
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402

from app.auth.roles import Role  # noqa: E402
from app.auth.service import create_token, create_user  # noqa: E402
from app.core.config import DEFAULT_REJECT_REASONS  # noqa: E402
from app.core.db import create_db_engine, make_session_factory, run_migrations, transaction  # noqa: E402
from app.datasets.models import SeedTask  # noqa: E402
from app.datasets.seed_formats import parse_seed_file  # noqa: E402
from app.datasets.service import create_dataset, import_seeds  # noqa: E402
from app.generation.item_query import SORTS, ItemQuery, conditions, cursor_of, order_by  # noqa: E402
from app.generation.models import GenerationJob, ImportStatus, Item, ItemImport, ItemStatus  # noqa: E402
from app.jobs.models import JobStatus  # noqa: E402
from app.reports.language import script_language  # noqa: E402
from app.review.models import ReviewAction, ReviewClaim, ReviewEvent, ReviewResponse, Verdict  # noqa: E402
from tests.support.processes import stop, wait_until_ready  # noqa: E402

DATA = Path(os.environ.get("SPROUT_SHARED_DATA", REPO.parent / "shared" / "data"))
BENCH_INSTRUCTIONS = DATA / "bench_instructions.jsonl.gz"
SEEDS = REPO / "seeds" / "default.jsonl"
OUT = REPO / "bench" / "results" / "review.json"
SEED = 20261125

TARGET_P99_MS = 100.0  # paced run, PostgreSQL
TARGET_PAGE_P95_MS = 150.0
TARGET_PAGE_RATIO = 1.3

# What the review page does (app/web/static/review.js).
CLAIM_BATCH = 10
REFILL_BELOW = 3
UI_SORT = "doubtful"

# The data's make-up.
PAGE_MIX = {
    ItemStatus.pending: 0.68,
    ItemStatus.filtered: 0.12,
    ItemStatus.approved: 0.16,
    ItemStatus.rejected: 0.04,
}
LOAD_FILTERED_SHARE = 0.12  # filtered items beside the pending ones of the load dataset
JOB_SHARES = (0.4, 0.3, 0.2, 0.1)  # of the generated items (80%); the other 20% are imported
IMPORTED_SHARE = 0.2
INPUT_SHARE = 0.3
EDITED_SHARE = 0.1  # of approvals
HEURISTIC_REASONS = {
    "blocklisted_keyword": 10,
    "instruction_too_long": 8,
    "instruction_too_short": 6,
    "starts_with_write_a_program": 6,
    "output_too_long": 4,
    "starts_with_punctuation": 2,
    "empty_output": 2,
    "output_only_punctuation": 1,
    "input_equals_output": 1,
}
SIGNALS = {"rouge_l": 70, "exact": 20, "fuzzy": 5, "semantic": 5}
COMMON_TERM = "story"  # in ~4% of the real instructions
CHINESE_TERM = "解释"
RARE_TERM = "Kilimanjaro"  # put into ~0.2% of the outputs
RARE_SHARE = 0.002

ZH_TOPICS = tuple(
    "机器学习 光合作用 唐诗宋词 量子计算 城市交通 气候变化 中医养生 围棋 区块链 咖啡文化 人工智能伦理 长城的历史 垃圾分类 "
    "高速铁路 春节习俗 太阳系 免疫系统 数据库索引 个人理财 睡眠健康".split()
)
ZH_TEMPLATES = (
    "请用三句话解释{t}的基本原理。",
    "写一篇关于{t}的短文，不少于两百字。",
    "列出学习{t}时最常见的五个误区，并逐一说明。",
    "比较{t}和{u}的异同。",
    "给一位刚入门的学生写一封信，介绍{t}。",
    "用通俗的语言向小学生解释{t}。",
    "为一篇讲{t}的文章写一个吸引人的标题和摘要。",
    "总结{t}的三个主要优点和两个缺点。",
    "以{t}为主题写一首五言绝句。",
    "设计一个关于{t}的十道选择题测验。",
    "请把下面这句话翻译成英文：{t}正在改变我们的生活。",
    "根据下面的描述判断它属于{t}还是{u}，并说明理由。",
)
ZH_DETAILS = (
    "",
    "要求语言简洁。",
    "请举一个具体的例子。",
    "面向没有专业背景的读者。",
    "不超过一百字。",
    "使用列表格式回答。",
    "语气要正式。",
    "最后给出一句总结。",
)
ZH_SENTENCES = (
    "这是一个很好的问题。",
    "首先，我们需要了解它的基本概念。",
    "其次，它在日常生活中有广泛的应用。",
    "例如，很多城市已经开始尝试新的方案。",
    "总的来说，这个领域仍在快速发展。",
    "研究表明，适当的练习可以显著提高效果。",
    "需要注意的是，不同的情况需要不同的方法。",
    "最后，希望这些建议对你有所帮助。",
    "它的核心思想其实并不复杂。",
    "从历史上看，这一变化经历了几个阶段。",
)
JA_TOPICS = ("機械学習", "俳句", "東京の交通", "和食", "地震対策", "茶道", "再生可能エネルギー", "アニメ産業")
JA_TEMPLATES = (
    "{t}について、初心者にも分かるように説明してください。",
    "{t}の長所と短所を三つずつ挙げてください。",
    "{t}をテーマにした短い物語を書いてください。",
    "{t}と{u}の違いを簡単にまとめてください。",
)
JA_SENTENCES = (
    "まず、基本的な考え方を説明します。",
    "次に、具体的な例を見てみましょう。",
    "これは多くの人にとって身近な話題です。",
    "最後に、ポイントをまとめます。",
    "注意すべき点もいくつかあります。",
)
KO_TOPICS = ("인공지능", "한국 전통 음식", "기후 변화", "서울의 역사", "건강한 식습관", "온라인 교육")
KO_TEMPLATES = (
    "{t}에 대해 간단히 설명해 주세요.",
    "{t}의 장점과 단점을 세 가지씩 알려 주세요.",
    "{t}을 주제로 짧은 글을 써 주세요.",
)
KO_SENTENCES = (
    "먼저 기본 개념을 살펴보겠습니다.",
    "다음으로 구체적인 예를 들어 보겠습니다.",
    "이 주제는 많은 사람들에게 중요합니다.",
    "마지막으로 핵심을 정리하겠습니다.",
)
CODE_TERMS = (
    "list comprehension", "generator expression", "async function", "hash map", "binary search", "REST API",
    "unit test", "SQL JOIN"
)  # fmt: skip
MIXED_TEMPLATES = (
    "请解释 Python 中的 {e} 和 {f} 有什么区别。",
    "用 JavaScript 写一个 {e} 的例子，并说明 {f} 的用法。",
    "What is a {e}? 请用中文回答，并举例说明 {f}。",
    "在 code review 的时候，{e} 和 {f} 应该注意什么？",
)
CODE_OUTPUT = (
    "```python\ndef solve(items):\n    seen = set()\n    result = []\n    for item in items:\n"
    "        if item not in seen:\n            seen.add(item)\n            result.append(item)\n    return result\n```"
)


# --- the data ------------------------------------------------------------------------------------------------


@functools.cache
def english_pool() -> tuple[list[str], list[str]]:
    """The real instructions (shuffled, seeded) and sentences cut from them (material for outputs and inputs)."""
    with gzip.open(BENCH_INSTRUCTIONS, "rt", encoding="utf-8") as lines:
        texts = [json.loads(line)["instruction"].strip() for line in lines]
    texts = [t for t in texts if t]
    random.Random(SEED).shuffle(texts)
    sentences = [
        part.strip(' "')
        for t in texts[:8000]
        for part in re.split(r"(?<=[.?!])\s+", t.replace("\n", " "))
        if 20 <= len(part.strip(' "')) <= 220
    ]
    return texts, sentences


def mutate(text: str, rng: random.Random, vocabulary: list[str], edits: int) -> str:
    """Word-level edits (substitute, insert, delete, swap): the near-duplicate a model writes when it paraphrases
    lazily. Texts without spaces (Chinese, Japanese) get a word appended or replaced instead."""
    words = text.split()
    if len(words) < 3:
        return text + rng.choice(("", "请详细说明。", "简短地回答。", " Explain briefly."))
    for _ in range(edits):
        op = rng.choice(("substitute", "insert", "delete", "swap"))
        if op == "insert":
            words.insert(rng.randint(0, len(words)), rng.choice(vocabulary))
        elif op == "substitute":
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
        elif op == "delete" and len(words) > 3:
            del words[rng.randrange(len(words))]
        elif len(words) > 1:
            at = rng.randrange(len(words) - 1)
            words[at], words[at + 1] = words[at + 1], words[at]
    return " ".join(words)


class TextMaker:
    """Instructions, inputs and outputs of realistic shapes, deterministic for a seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.pool, self.sentences = english_pool()
        self.vocabulary = [w for s in self.sentences[:3000] for w in s.split() if w.isalpha()]
        self.next_english = 0

    def english_instruction(self) -> str:
        k = self.next_english
        self.next_english += 1
        text = self.pool[k % len(self.pool)]
        return text if k < len(self.pool) else mutate(text, self.rng, self.vocabulary, 3)

    def english_output(self) -> str:
        rng = self.rng
        shape = rng.random()
        if shape < 0.30:
            return rng.choice(self.sentences)
        if shape < 0.65:
            return " ".join(rng.sample(self.sentences, rng.randint(3, 7)))
        if shape < 0.85:
            return "\n".join(
                f"{n}. {s}" for n, s in enumerate(rng.sample(self.sentences, rng.randint(3, 6)), 1)
            )
        if shape < 0.95:
            return rng.choice(self.sentences) + "\n\n" + CODE_OUTPUT
        return "\n\n".join(" ".join(rng.sample(self.sentences, 6)) for _ in range(rng.randint(2, 4)))

    def cjk(
        self, templates: tuple[str, ...], topics: tuple[str, ...], sentences: tuple[str, ...]
    ) -> tuple[str, str]:
        rng = self.rng
        t, u = rng.sample(topics, 2)
        instruction = rng.choice(templates).format(t=t, u=u) + (
            rng.choice(ZH_DETAILS) if topics is ZH_TOPICS else ""
        )
        output = "".join(rng.sample(sentences, min(len(sentences), rng.randint(2, 6))))
        return instruction, output

    def texts(self) -> tuple[str, str, str]:
        """(instruction, input, output) of a new item: English mostly, some Chinese, Japanese, Korean, mixed."""
        rng = self.rng
        kind = rng.random()
        if kind < 0.08:
            instruction, output = self.cjk(ZH_TEMPLATES, ZH_TOPICS, ZH_SENTENCES)
        elif kind < 0.10:
            instruction, output = self.cjk(JA_TEMPLATES, JA_TOPICS, JA_SENTENCES)
        elif kind < 0.11:
            instruction, output = self.cjk(KO_TEMPLATES, KO_TOPICS, KO_SENTENCES)
        elif kind < 0.13:
            e, f = rng.sample(CODE_TERMS, 2)
            instruction = rng.choice(MIXED_TEMPLATES).format(e=e, f=f)
            output = "".join(rng.sample(ZH_SENTENCES, 3)) + "\n\n" + CODE_OUTPUT
        else:
            instruction, output = self.english_instruction(), self.english_output()
        given = " ".join(rng.sample(self.sentences, rng.randint(1, 4))) if rng.random() < INPUT_SHARE else ""
        if rng.random() < RARE_SHARE:
            output += f" The climb up {RARE_TERM} takes about a week."
        return instruction, given, output


@dataclass
class Population:
    """One dataset made for a run, and what the bench needs to drive it."""

    url: str
    dataset_id: int
    items: int
    by_status: dict[str, int]
    admin_token: str
    reviewer_tokens: list[str]
    job_id: int  # the smallest job: the job filter's page
    sample_items: dict[str, int]  # for the item pages
    cursors: dict[str, str] = field(default_factory=dict)  # sort -> a cursor 90% into the pending items
    seconds: float = 0.0


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def build_rows(
    counts: dict[ItemStatus, int],
    *,
    dataset_id: int,
    first_id: int,
    job_ids: list[int],
    import_id: int,
    seed_ids: list[int],
    reviewers: list[tuple[int, str]],
    seed: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """Rows of `item`, `review_response` and `review_event` (None values left out: SQL NULL, not JSON null)."""
    maker = TextMaker(seed)
    rng = random.Random(seed + 1)
    statuses = [status for status, n in counts.items() for _ in range(n)]
    rng.shuffle(statuses)
    total = len(statuses)
    now = datetime.now(UTC)
    start = now - timedelta(days=3)
    items: list[dict[str, Any]] = []
    responses: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    # For the item pages: positions of pending items with a neighbour and of edited ones...
    candidates: dict[str, list[int]] = {}
    instructions: list[str] = []
    for k, status in enumerate(statuses):
        item_id = first_id + k
        instruction, given, output = maker.texts()
        row: dict[str, Any] = {
            "id": item_id,
            "dataset_id": dataset_id,
            "status": status,
            "version": 1,
            "labels": {},
            "quality": {},
            "created_at": start + timedelta(days=2) * (k / max(1, total)),
        }
        if rng.random() < IMPORTED_SHARE:
            row["import_id"] = import_id
        else:
            row["job_id"] = rng.choices(job_ids, weights=JOB_SHARES)[0]
            row["model"] = "SmolLM2-135M-Instruct"
        earlier = rng.randrange(k) if k else None
        neighbour = rng.random()
        if status is ItemStatus.filtered:
            reason = "near_duplicate" if rng.random() < 0.6 else _weighted(rng, HEURISTIC_REASONS)
            row["filter_reason"] = reason
            if reason == "near_duplicate" and earlier is not None:
                signal = _weighted(rng, SIGNALS)
                row["duplicate_signal"] = signal
                row.update(nearest_kind="item", nearest_id=first_id + earlier)
                if signal == "exact":
                    instruction, row["nearest_rouge_l"] = instructions[earlier], 1.0
                else:
                    instruction = mutate(instructions[earlier], rng, maker.vocabulary, 1)
                    row["nearest_rouge_l"] = round(rng.uniform(0.7, 0.98), 4)
                if signal == "fuzzy":
                    row["fuzzy_score"] = round(rng.uniform(90, 99), 2)
                if signal == "semantic":
                    row["semantic_score"] = round(rng.uniform(0.9, 0.99), 4)
            elif reason == "near_duplicate":
                row["filter_reason"] = "instruction_too_short"
            elif reason == "empty_output":
                output = ""
            elif reason == "starts_with_write_a_program":
                instruction = "Write a program that " + instruction[:1].lower() + instruction[1:]
        elif neighbour < 0.15 and earlier is not None:  # a near miss: the doubtful items
            instruction = mutate(instructions[earlier], rng, maker.vocabulary, 2)
            row.update(
                nearest_kind="item",
                nearest_id=first_id + earlier,
                nearest_rouge_l=round(rng.uniform(0.6, 0.7), 4),
            )
        elif neighbour < 0.65:
            if earlier is not None and rng.random() < 0.7:
                row.update(nearest_kind="item", nearest_id=first_id + earlier)
            else:
                row.update(nearest_kind="seed", nearest_id=rng.choice(seed_ids))
            row["nearest_rouge_l"] = round(rng.uniform(0.1, 0.6), 4)
        instructions.append(instruction)
        row.update(instruction=instruction, input=given, output=output)
        row["language"] = script_language(instruction, given, output)
        if status in (ItemStatus.approved, ItemStatus.rejected):
            decide_row(row, rng, reviewers, now, responses, events)
        if status is ItemStatus.pending and row.get("nearest_kind") == "item":
            candidates.setdefault("pending", []).append(k)
        if row.get("original"):
            candidates.setdefault("edited", []).append(k)
        items.append({key: value for key, value in row.items() if value is not None})
    # ... and the first of each kind past the middle of the dataset (or the last one, if none is)
    samples = {
        kind: first_id + next((k for k in ks if k >= total // 2), ks[-1]) for kind, ks in candidates.items()
    }
    return items, responses, events, samples


def decide_row(
    row: dict[str, Any],
    rng: random.Random,
    reviewers: list[tuple[int, str]],
    now: datetime,
    responses: list[dict[str, Any]],
    events: list[dict[str, Any]],
) -> None:
    """A decided item's history, as a reviewer's decision leaves it: the answer, the event, the edit."""
    user_id, user = rng.choice(reviewers)
    when = now - timedelta(hours=rng.uniform(0.01, 23.9))
    approve = row["status"] is ItemStatus.approved
    answer: dict[str, Any] = {
        "item_id": row["id"],
        "dataset_id": row["dataset_id"],
        "user_id": user_id,
        "verdict": Verdict.approve if approve else Verdict.reject,
        "created_at": when,
    }
    event: dict[str, Any] = {
        "dataset_id": row["dataset_id"],
        "item_id": row["id"],
        "actor_id": user_id,
        "actor": user,
        "action": ReviewAction.approve if approve else ReviewAction.reject,
        "from_status": "pending",
        "to_status": row["status"].value,
        "version_after": 2,
        "created_at": when,
    }
    if not approve:
        answer["reason"] = event["reason"] = rng.choice(DEFAULT_REJECT_REASONS)
    elif rng.random() < EDITED_SHARE:
        before = {"instruction": row["instruction"], "input": row["input"], "output": row["output"]}
        row["output"] = row["output"] + "\n\nNote: checked against the source and corrected."
        after = {**before, "output": row["output"]}
        row["original"] = before
        answer["edits"] = {"output": row["output"]}
        event.update(before=before, after=after)
    row.update(version=2, decided_at=when)
    responses.append(answer)
    events.append(event)


def insert_rows(session: Any, table: Any, rows: list[dict[str, Any]], chunk: int = 5000) -> None:
    """Core bulk inserts, rows grouped by their columns (a missing column is NULL or its default)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    for group in groups.values():
        for start in range(0, len(group), chunk):
            session.execute(insert(table), group[start : start + chunk])


def populate(url: str, name: str, counts: dict[ItemStatus, int], reviewers: int) -> Population:
    started = time.perf_counter()
    run_migrations(url)
    engine = create_db_engine(url)
    sessions = make_session_factory(engine)
    total = sum(counts.values())
    with transaction(sessions) as session:
        dataset = create_dataset(session, name)
        import_seeds(
            session, dataset, parse_seed_file(SEEDS.read_bytes(), filename=SEEDS.name), source=SEEDS.name
        )
        admin = create_user(session, "bench-admin", Role.admin)
        admin_token, _ = create_token(session, admin, name="review bench")
        users = [create_user(session, f"reviewer-{n:02d}", Role.reviewer) for n in range(1, reviewers + 1)]
        tokens = [create_token(session, user, name="review bench")[0] for user in users]
        generated = round(total * (1 - IMPORTED_SHARE))
        jobs = []
        for n, share in enumerate(JOB_SHARES):
            produced = max(1, round(generated * share))
            jobs.append(
                GenerationJob(
                    dataset_id=dataset.id,
                    params={"count": produced},
                    backend="bench",
                    seed=n,
                    requested=produced,
                    raw=produced,
                    parsed=produced,
                    accepted=produced,
                    status=JobStatus.succeeded,
                )
            )
        imported = round(total * IMPORTED_SHARE)
        upload = ItemImport(
            dataset_id=dataset.id,
            filename="cleaned.jsonl",
            format="alpaca",
            status=ImportStatus.succeeded,
            created_by="bench-admin",
            records=imported,
            done=imported,
            accepted=imported,
        )
        session.add_all([*jobs, upload])
        session.flush()
        dataset_id, job_ids, import_id = dataset.id, [j.id for j in jobs], upload.id
        seed_ids = list(session.scalars(select(SeedTask.id).where(SeedTask.dataset_id == dataset_id)))
        first_id = (session.scalar(select(func.max(Item.id))) or 0) + 1
        reviewer_ids = [(u.id, u.name) for u in users]
    items, responses, events, samples = build_rows(
        counts,
        dataset_id=dataset_id,
        first_id=first_id,
        job_ids=job_ids,
        import_id=import_id,
        seed_ids=seed_ids,
        reviewers=reviewer_ids,
        seed=SEED + total,
    )
    with transaction(sessions) as session:
        insert_rows(session, Item.__table__, items)
        insert_rows(session, ReviewResponse.__table__, responses)
        insert_rows(session, ReviewEvent.__table__, events)
    postgres = engine.dialect.name == "postgresql"
    if postgres:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('item', 'id'), (SELECT max(id) FROM item))")
            )
            conn.execute(text("VACUUM ANALYZE"))  # what autovacuum does on a live server after a bulk load
    with sessions() as session:
        by_status = {
            s: int(n)
            for s, n in session.execute(
                text("SELECT status, sum(n) FROM item_count WHERE dataset_id = :d GROUP BY status"),
                {"d": dataset_id},
            )
        }
        cursors = {}
        pending = by_status.get("pending", 0)
        if pending > 1:
            where = conditions(dataset_id, ItemQuery(status=ItemStatus.pending))
            for sort in SORTS:
                deep = session.scalars(
                    select(Item).where(*where).order_by(*order_by(sort)).offset(int(pending * 0.9)).limit(1)
                ).first()
                if deep is not None:
                    cursors[sort] = cursor_of(sort, deep)
    engine.dispose()
    expected = {s.value: n for s, n in counts.items() if n}
    by_status = {s: n for s, n in by_status.items() if n}
    if by_status != expected:  # the triggers must have counted the Core inserts
        raise RuntimeError(f"item_count says {by_status}, inserted {expected}")
    return Population(
        url=url,
        dataset_id=dataset_id,
        items=total,
        by_status=by_status,
        admin_token=admin_token,
        reviewer_tokens=tokens,
        job_id=job_ids[-1],
        sample_items=samples,
        cursors=cursors,
        seconds=round(time.perf_counter() - started, 1),
    )


# --- databases and the server --------------------------------------------------------------------------------


@contextlib.contextmanager
def database_url(database: str) -> Iterator[str]:
    if database == "sqlite":
        with tempfile.TemporaryDirectory(prefix="sprout-review-bench-") as directory:
            yield f"sqlite:///{directory}/bench.db"
        return
    from tests.support.databases import fresh_postgres_database

    with fresh_postgres_database() as url:
        yield url


@dataclass
class Server:
    base_url: str
    pids: list[int]
    log: IO[bytes]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server processes so far."""
        total = 0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def log_errors(self) -> list[str]:
        self.log.flush()
        self.log.seek(0)
        lines = self.log.read().decode("utf-8", "replace").splitlines()
        return [line for line in lines if "Traceback" in line or line.startswith("ERROR")]


@contextlib.contextmanager
def serving(url: str, name: str, workers: int = 1) -> Iterator[Server]:
    """The service in `workers` processes, as `sprout serve --workers N` runs it: uvicorn serving create_app()
    on one socket bound here (a free loopback port that no other process can take in between; the kernel
    spreads connections over the processes), configured from the environment."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    env = {
        **os.environ,
        "SPROUT_DATABASE_URL": url,
        "SPROUT_WORKER_ENABLED": "false",
        "SPROUT_BOOTSTRAP": "false",
    }
    with tempfile.TemporaryFile() as log:
        processes = []
        try:
            for _ in range(workers):
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(Path(__file__).resolve()),
                            "--child",
                            "serve",
                            str(sock.fileno()),
                        ],
                        cwd=REPO,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        pass_fds=(sock.fileno(),),
                    )
                )
        finally:
            sock.close()  # the children have their own copies
        try:
            base_url = f"http://127.0.0.1:{port}"
            for process in processes:
                wait_until_ready(
                    process, f"{base_url}/healthz", timeout=120, log=log, name=f"sprout ({name})"
                )
            yield Server(base_url, [p.pid for p in processes], log)
        finally:
            for process in processes:
                stop(process)


def child_serve(fd: str) -> None:
    import uvicorn

    sock = socket.socket(fileno=int(fd))
    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[sock])


# --- the reviewers (a process of their own) ------------------------------------------------------------------


class Reviewer:
    """One reviewer working as the review page does: claim a batch, look at an item, decide, refill below 3."""

    def __init__(
        self, number: int, token: str, client: httpx.AsyncClient, config: dict[str, Any], log: dict[str, Any]
    ):
        self.number = number
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.dataset_id = config["dataset_id"]
        self.pace = float(config["pace"])
        self.rng = random.Random(config["seed"] * 1000 + number)
        self.config = config
        self.log = log
        self.open: dict[int, dict[str, Any]] = {}  # claimed and not yet decided, in the queue's order
        self.done: set[int] = set()
        self.reasons = list(DEFAULT_REJECT_REASONS)
        self.lease_seconds = 600.0
        self.renewed_at = 0.0

    async def call(self, kind: str, path: str, body: dict[str, Any], item_id: int | None = None) -> Any:
        started = time.perf_counter()
        status: int | str
        payload: Any = None
        try:
            response = await self.client.post(path, json=body, headers=self.headers)
            status = response.status_code
            if response.headers.get("content-type", "").startswith("application/json"):
                payload = response.json()
        except httpx.TimeoutException:
            status = "timeout"
        except httpx.HTTPError as exc:
            status = f"transport: {type(exc).__name__}"
        ended = time.perf_counter()
        self.log["requests"].append(
            [kind, round(started - self.log["t0"], 4), round((ended - started) * 1000, 3), status]
        )
        if status == 200:
            return payload
        self.log["errors"].append(
            {
                "reviewer": self.number,
                "kind": kind,
                "status": status,
                "item_id": item_id,
                "held": item_id is not None,  # a decision is only ever sent for an item this reviewer holds
                "t": round(started - self.log["t0"], 3),
                "detail": str(payload.get("detail") if isinstance(payload, dict) else payload)[:300],
            }
        )
        return None

    async def claim(self) -> None:
        body = {"n": CLAIM_BATCH, "sort": UI_SORT}
        result = await self.call("claim", f"/v1/datasets/{self.dataset_id}/review/claim", body)
        if result is None:
            return
        self.reasons = result["reject_reasons"] or self.reasons
        self.lease_seconds = float(result["lease_seconds"])
        self.renewed_at = time.perf_counter()
        for item in result["items"]:
            if item["id"] not in self.done:
                self.open.setdefault(item["id"], item)

    async def renew(self) -> None:
        if time.perf_counter() - self.renewed_at >= self.lease_seconds / 3:
            self.renewed_at = time.perf_counter()
            await self.call("renew", f"/v1/datasets/{self.dataset_id}/review/renew", {})

    def decision(self, item: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        body: dict[str, Any] = {"decision": "approve", "version": item["version"]}
        roll = rng.random()
        if roll < 0.10:
            body.update(decision="reject", reason=rng.choice(self.reasons))
            if rng.random() < 0.5:
                body["note"] = rng.choice(("off topic", "the answer is wrong", "too vague to be useful"))
        elif roll < 0.15:
            if rng.random() < 0.5:
                body["edits"] = {
                    "output": item["output"].rstrip() + "\n\n(Checked and corrected by the reviewer.)"
                }
            else:
                body["edits"] = {"instruction": item["instruction"].rstrip() + " Answer in one paragraph."}
        return body

    async def run(self, deadline: float) -> None:
        if self.pace:  # reviewers join over the ramp-up (a team does not start in the same second)
            await asyncio.sleep(self.rng.uniform(0, max(self.pace, float(self.config.get("ramp", 0)))))
        await self.claim()
        while time.perf_counter() < deadline:
            if not self.open:
                await asyncio.sleep(max(self.pace, 0.2))  # nothing to review: look again in a moment
                await self.claim()
                continue
            item_id, item = next(iter(self.open.items()))
            if self.pace:
                await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.pace)
                if time.perf_counter() >= deadline:
                    break
            del self.open[item_id]
            self.done.add(item_id)
            if (
                await self.call("decide", f"/v1/items/{item_id}/review", self.decision(item), item_id)
                is not None
            ):
                self.log["decisions"].append(round(time.perf_counter() - self.log["t0"], 4))
            if len(self.open) < REFILL_BELOW:
                await self.claim()
            await self.renew()


async def drive_reviewers(config: dict[str, Any]) -> dict[str, Any]:
    tokens = config["tokens"]
    limits = httpx.Limits(max_connections=2 * len(tokens) + 8, max_keepalive_connections=2 * len(tokens) + 8)
    log: dict[str, Any] = {"requests": [], "errors": [], "decisions": []}
    async with httpx.AsyncClient(
        base_url=config["base_url"], timeout=config["timeout"], limits=limits, trust_env=False
    ) as client:
        cpu = time.process_time()
        log["t0"] = time.perf_counter()
        deadline = log["t0"] + config["duration"]
        reviewers = [Reviewer(n, token, client, config, log) for n, token in enumerate(tokens, 1)]
        await asyncio.gather(*(r.run(deadline) for r in reviewers))
        log["elapsed_s"] = time.perf_counter() - log["t0"]
        log["client_cpu_s"] = time.process_time() - cpu
    return log


def child_reviewers(config_path: str, out_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    Path(out_path).write_text(json.dumps(asyncio.run(drive_reviewers(config))))


def run_reviewers(
    server: Server,
    population: Population,
    *,
    pace: float,
    duration: float,
    timeout: float,
    seed: int,
    ramp: float = 0.0,
) -> dict[str, Any]:
    """The reviewers in a process of their own for `duration` seconds; their raw log."""
    with tempfile.TemporaryDirectory(prefix="sprout-reviewers-") as directory:
        config_path, out_path = Path(directory) / "config.json", Path(directory) / "out.json"
        config = {
            "base_url": server.base_url,
            "dataset_id": population.dataset_id,
            "tokens": population.reviewer_tokens,
            "pace": pace,
            "ramp": ramp,
            "duration": duration,
            "timeout": timeout,
            "seed": seed,
        }
        config_path.write_text(json.dumps(config))
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                "reviewers",
                str(config_path),
                str(out_path),
            ],
            cwd=REPO,
            check=True,
            timeout=duration + 10 * timeout + 60,
        )
        return json.loads(out_path.read_text())


# --- figures -------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    at = (len(ordered) - 1) * q / 100
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (at - low), 2)


def latency(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "max_ms": round(max(values), 2) if values else None,
        "mean_ms": round(statistics.fmean(values), 2) if values else None,
    }


def error_class(status: int | str) -> str:
    if status == "timeout":
        return "timeout"
    if isinstance(status, str):
        return "transport"
    if status >= 500:
        return "5xx"
    if status == 409:
        return "409"
    return f"unexpected_{status}"


def summarize_run(raw: dict[str, Any], reviewers: int, ramp: float = 0.0) -> dict[str, Any]:
    """Latencies of the steady state (requests started after the ramp-up, while reviewers were still joining
    and claiming their first batches, which is reported apart); errors and decisions over the whole run."""
    by_kind: dict[str, list[float]] = {}
    steady = [r for r in raw["requests"] if r[1] >= ramp]
    for kind, _, ms, _ in steady:
        by_kind.setdefault(kind, []).append(ms)
    review_requests = [ms for kind, _, ms, _ in steady if kind in ("claim", "decide")]
    ramp_requests = [
        ms for kind, started, ms, _ in raw["requests"] if started < ramp and kind in ("claim", "decide")
    ]
    decisions = raw["decisions"]
    elapsed = raw["elapsed_s"]
    per_second = Counter(int(t) for t in decisions)
    seconds = list(range(int(elapsed) + 1))
    series = [per_second.get(s, 0) for s in seconds]
    best_5s = max((sum(series[s : s + 5]) / 5 for s in range(max(1, len(series) - 4))), default=0.0)
    errors = Counter(error_class(e["status"]) for e in raw["errors"])
    return {
        "reviewers": reviewers,
        "elapsed_s": round(elapsed, 2),
        "decisions": len(decisions),
        "decisions_per_s": round(len(decisions) / elapsed, 2),
        "best_5s_decisions_per_s": round(best_5s, 2),
        "requests": len(raw["requests"]),
        "ramp_s": ramp,
        "ramp": latency(ramp_requests),
        "all": latency(review_requests),
        "claim": latency(by_kind.get("claim", [])),
        "decide": latency(by_kind.get("decide", [])),
        "renew": latency(by_kind.get("renew", [])),
        "errors": sum(errors.values()),
        "errors_by_class": dict(errors),
        "error_samples": raw["errors"][:50],
        "conflicts": [e for e in raw["errors"] if e["status"] == 409][:500],
        "decisions_per_second_series": series,
        "client_cpu_s": round(raw["client_cpu_s"], 2),
    }


def check_database(url: str, dataset_id: int, client_decisions: int) -> dict[str, Any]:
    """The database's view of the run: every decision recorded once, no item answered or claimed twice."""
    engine = create_db_engine(url)
    with make_session_factory(engine)() as session:
        events = session.scalar(
            select(func.count())
            .select_from(ReviewEvent)
            .where(
                ReviewEvent.dataset_id == dataset_id,
                ReviewEvent.action.in_((ReviewAction.approve, ReviewAction.reject)),
            )
        )
        answered_twice = session.scalar(
            select(func.count()).select_from(
                select(ReviewResponse.item_id)
                .where(ReviewResponse.dataset_id == dataset_id)
                .group_by(ReviewResponse.item_id)
                .having(func.count() > 1)
                .subquery()
            )
        )
        claimed_twice = session.scalar(
            select(func.count()).select_from(
                select(ReviewClaim.item_id)
                .where(ReviewClaim.dataset_id == dataset_id)
                .group_by(ReviewClaim.item_id)
                .having(func.count() > 1)
                .subquery()
            )
        )
    engine.dispose()
    return {
        "decision_events": events,
        "client_decisions": client_decisions,
        "consistent": events == client_decisions and not answered_twice and not claimed_twice,
        "items_answered_twice": answered_twice,
        "items_claimed_twice": claimed_twice,
    }


class LockSampler:
    """PostgreSQL only: four times a second, how many of the database's sessions are running a statement and how
    many of those wait for a lock, and which statements wait (a hot row shows up here)."""

    def __init__(self, url: str) -> None:
        self.engine = create_db_engine(url)
        self.samples: list[tuple[int, int]] = []
        self.waiting: Counter[str] = Counter()
        self.blockers: Counter[str] = Counter()  # what the sessions they wait for are doing
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lock-sampler", daemon=True)

    def _run(self) -> None:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while not self.stopping.wait(0.25):
                rows = conn.execute(
                    text(
                        "SELECT w.wait_event_type, left(regexp_replace(w.query, '\\s+', ' ', 'g'), 90), "
                        "CASE WHEN w.wait_event_type = 'Lock' THEN (SELECT string_agg(b.state || ': ' || "
                        "left(regexp_replace(b.query, '\\s+', ' ', 'g'), 70), ' | ') FROM pg_stat_activity b "
                        "WHERE b.pid = ANY(pg_blocking_pids(w.pid))) END "
                        "FROM pg_stat_activity w WHERE w.datname = current_database() AND w.state = 'active' "
                        "AND w.pid <> pg_backend_pid()"
                    )
                ).all()
                waits = [(query, blocker) for kind, query, blocker in rows if kind == "Lock"]
                self.samples.append((len(rows), len(waits)))
                self.waiting.update(query for query, _ in waits)
                self.blockers.update(blocker or "?" for _, blocker in waits)

    def __enter__(self) -> LockSampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.engine.dispose()

    def summary(self) -> dict[str, Any]:
        n = len(self.samples) or 1
        return {
            "samples": len(self.samples),
            "mean_active_statements": round(sum(a for a, _ in self.samples) / n, 2),
            "mean_waiting_for_lock": round(sum(w for _, w in self.samples) / n, 2),
            "share_of_samples_with_a_lock_wait": round(sum(1 for _, w in self.samples if w) / n, 3),
            "waiting_statements": [{"statement": q, "samples": c} for q, c in self.waiting.most_common(5)],
            "blocked_by": [{"blocker": q, "samples": c} for q, c in self.blockers.most_common(8)],
        }


# --- 1. load ---------------------------------------------------------------------------------------------------


def warm_up(server: Server, population: Population) -> None:
    """A few requests of each kind, so the first measured ones do not pay for imports and statement caches."""
    headers = {"Authorization": f"Bearer {population.admin_token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60, trust_env=False) as client:
        for _ in range(3):
            client.get(f"/ui/datasets/{population.dataset_id}/queue").raise_for_status()
            held = client.post(f"/v1/datasets/{population.dataset_id}/review/claim", json={"n": 2}).json()
            ids = [item["id"] for item in held["items"]]
            client.post(f"/v1/datasets/{population.dataset_id}/review/release", json={"item_ids": ids})


def load_section(database: str, args: argparse.Namespace) -> dict[str, Any]:
    filtered = round(args.items * LOAD_FILTERED_SHARE)
    counts = {ItemStatus.pending: args.items, ItemStatus.filtered: filtered}
    with database_url(database) as url:
        population = populate(url, "review-load", counts, args.reviewers)
        print(
            f"  {database}: {args.items:,} pending + {filtered:,} filtered items, {args.reviewers} reviewers "
            f"({population.seconds:.0f} s to load)",
            flush=True,
        )
        result: dict[str, Any] = {
            "database": database,
            "population": population.by_status,
            "load_seconds": population.seconds,
        }
        decided = 0
        with serving(url, database, args.server_workers) as server:
            warm_up(server, population)
            for label, pace, duration, ramp in (
                ("paced", args.pace, args.duration + args.ramp, args.ramp),
                ("saturation", 0.0, args.saturation, 0.0),
            ):
                cpu = server.cpu_seconds()
                load_before = os.getloadavg()[0]
                sampler = LockSampler(url) if database == "postgres" else contextlib.nullcontext()
                with sampler:
                    raw = run_reviewers(
                        server,
                        population,
                        pace=pace,
                        duration=duration,
                        timeout=args.timeout,
                        seed=SEED,
                        ramp=ramp,
                    )
                run = summarize_run(raw, args.reviewers, ramp)
                if isinstance(sampler, LockSampler):
                    run["postgres_activity"] = sampler.summary()
                run["pace_s"] = pace
                run["server_cpu_s"] = round(server.cpu_seconds() - cpu, 2)
                run["loadavg_before"] = round(load_before, 2)
                decided += run["decisions"]
                run["database_check"] = check_database(url, population.dataset_id, decided)
                result[label] = run
                print_run(database, label, run)
            result["server_log_errors"] = server.log_errors()[:20]
    return result


def print_run(database: str, label: str, run: dict[str, Any]) -> None:
    claim, decide = run["claim"], run["decide"]
    print(
        f"  {database} {label}: {run['decisions_per_s']:.1f} decisions/s ({run['decisions']} in {run['elapsed_s']:.0f} s), "
        f"p50 {run['all']['p50_ms']} ms, p99 {run['all']['p99_ms']} ms "
        f"(claim {claim['p50_ms']}/{claim['p99_ms']}, decide {decide['p50_ms']}/{decide['p99_ms']}), "
        f"errors {run['errors']}{' ' + json.dumps(run['errors_by_class']) if run['errors'] else ''}; "
        f"CPU server {run['server_cpu_s']:.0f} s, "
        f"client {run['client_cpu_s']:.0f} s; database consistent: {run['database_check']['consistent']}",
        flush=True,
    )
    activity = run.get("postgres_activity")
    if activity:
        print(
            f"    PostgreSQL: {activity['mean_active_statements']} statements running on average, "
            f"{activity['mean_waiting_for_lock']} of them waiting for a lock "
            f"(in {activity['share_of_samples_with_a_lock_wait']:.0%} of the samples)",
            flush=True,
        )
        for waiting in activity["waiting_statements"]:
            print(f"      waiting {waiting['samples']:4d}x: {waiting['statement']}", flush=True)
        for blocker in activity["blocked_by"]:
            print(f"      behind  {blocker['samples']:4d}x: {blocker['blocker'][:150]}", flush=True)
    for error in run["error_samples"]:
        print(f"    error: {error}", flush=True)
    if len(run["conflicts"]) > len([e for e in run["error_samples"] if e["status"] == 409]):
        for error in run["conflicts"]:
            print(f"    409: {error}", flush=True)


# --- 2. pages ------------------------------------------------------------------------------------------------


def page_filters(population: Population) -> dict[str, dict[str, Any]]:
    return {
        "all": {},
        "pending": {"status": "pending"},
        "approved": {"status": "approved"},
        "language_zh": {"status": "pending", "language": "zh"},
        "job": {"status": "pending", "job_id": population.job_id},
        "reason_near_duplicate": {"status": "filtered", "filter_reason": "near_duplicate"},
        "reason_blocklisted": {"status": "filtered", "filter_reason": "blocklisted_keyword"},
        "signal_rouge_l": {"duplicate_signal": "rouge_l"},
        "q_common": {"status": "pending", "q": COMMON_TERM},
        "q_chinese": {"status": "pending", "q": CHINESE_TERM},
        "q_rare": {"status": "pending", "q": RARE_TERM},
    }


def page_urls(population: Population) -> dict[str, str]:
    d = population.dataset_id
    urls = {
        "datasets /ui": "/ui",
        "dataset (progress)": f"/ui/datasets/{d}",
        "review page": f"/ui/datasets/{d}/review",
    }
    for kind, item_id in population.sample_items.items():
        urls[f"item {kind}"] = f"/ui/items/{item_id}"
    for name, params in page_filters(population).items():
        for sort in SORTS:
            query = urlencode({**params, "sort": sort})
            urls[f"queue {name} {sort}"] = f"/ui/datasets/{d}/queue?{query}"
            urls[f"items {name} {sort}"] = f"/v1/datasets/{d}/items?{query}"
    for sort, cursor in population.cursors.items():
        query = urlencode({"status": "pending", "sort": sort, "cursor": cursor})
        urls[f"queue deep {sort}"] = f"/ui/datasets/{d}/queue?{query}"
        urls[f"items deep {sort}"] = f"/v1/datasets/{d}/items?{query}"
    return urls


def timed_get(client: httpx.Client, url: str) -> tuple[float, int, int | None]:
    """(milliseconds, status, rows shown) of one GET, the whole body read."""
    started = time.perf_counter()
    response = client.get(url)
    body = response.content
    elapsed = (time.perf_counter() - started) * 1000
    rows = None
    if response.status_code == 200:
        if url.startswith("/v1/"):
            rows = len(json.loads(body)["data"])
        elif "/queue" in url:
            rows = body.count(b"<tr data-item-id=")
    return elapsed, response.status_code, rows


def pages_section(database: str, args: argparse.Namespace) -> dict[str, Any]:
    sizes = {"small": args.small_items, "large": args.items}
    with database_url(database) as small_url, database_url(database) as large_url:
        populations = {}
        for size, url in (("small", small_url), ("large", large_url)):
            counts = {status: round(sizes[size] * share) for status, share in PAGE_MIX.items()}
            populations[size] = populate(url, "review-pages", counts, args.reviewers)
            print(
                f"  {database}: {populations[size].items:,} items ({populations[size].seconds:.0f} s to load)",
                flush=True,
            )
        with (
            serving(small_url, f"{database} small", args.server_workers) as small_server,
            serving(large_url, f"{database} large", args.server_workers) as large_server,
        ):
            servers = {"small": small_server, "large": large_server}
            urls = {size: page_urls(p) for size, p in populations.items()}
            names = [n for n in urls["small"] if n in urls["large"]]
            clients = {
                size: httpx.Client(
                    base_url=servers[size].base_url,
                    headers={"Authorization": f"Bearer {populations[size].admin_token}"},
                    timeout=60,
                    trust_env=False,
                )
                for size in sizes
            }
            samples: dict[str, dict[str, list[float]]] = {n: {"small": [], "large": []} for n in names}
            rows: dict[str, dict[str, int | None]] = {n: {} for n in names}
            failures: list[dict[str, Any]] = []
            rng = random.Random(SEED)
            started = time.perf_counter()
            load_before = os.getloadavg()[0]
            try:
                for round_no in range(args.page_warmup + args.page_repeats):
                    order = list(names)
                    rng.shuffle(order)
                    for i, name in enumerate(order):
                        for size in ("small", "large") if (round_no + i) % 2 == 0 else ("large", "small"):
                            ms, status, shown = timed_get(clients[size], urls[size][name])
                            if status != 200:
                                failures.append({"page": name, "size": size, "status": status})
                                continue
                            rows[name][size] = shown
                            if round_no >= args.page_warmup:
                                samples[name][size].append(ms)
            finally:
                for client in clients.values():
                    client.close()
            server_errors = {size: s.log_errors()[:20] for size, s in servers.items()}
    table = []
    for name in names:
        small, large = samples[name]["small"], samples[name]["large"]
        p95_small, p95_large = percentile(small, 95), percentile(large, 95)
        p50_small, p50_large = percentile(small, 50), percentile(large, 50)
        ratio = round(p95_large / p95_small, 2) if p95_small and p95_large else None
        table.append(
            {
                "page": name,
                "url_large": urls["large"][name],
                "p50_ms_small": p50_small,
                "p95_ms_small": p95_small,
                "p50_ms_large": p50_large,
                "p95_ms_large": p95_large,
                "ratio_p95": ratio,
                "ratio_p50": round(p50_large / p50_small, 2) if p50_small and p50_large else None,
                "rows_small": rows[name].get("small"),
                "rows_large": rows[name].get("large"),
                "meets_p95": p95_large is not None and p95_large <= TARGET_PAGE_P95_MS,
                "meets_ratio": ratio is not None and ratio <= TARGET_PAGE_RATIO,
            }
        )
    measured = [r for r in table if r["p95_ms_large"] is not None]
    worst = max(measured, key=lambda r: r["p95_ms_large"]) if measured else None
    worst_ratio = max((r for r in measured if r["ratio_p95"]), key=lambda r: r["ratio_p95"], default=None)
    result = {
        "database": database,
        "loadavg_before": round(load_before, 2),
        "items": sizes,
        "populations": {size: p.by_status for size, p in populations.items()},
        "repeats": args.page_repeats,
        "warmup_rounds": args.page_warmup,
        "seconds": round(time.perf_counter() - started, 1),
        "page_p95_ms_large": worst["p95_ms_large"] if worst else None,
        "worst_page": worst["page"] if worst else None,
        "max_ratio_p95": worst_ratio["ratio_p95"] if worst_ratio else None,
        "max_ratio_page": worst_ratio["page"] if worst_ratio else None,
        "pages_missing_p95": [r["page"] for r in table if not r["meets_p95"]],
        "pages_missing_ratio": [r["page"] for r in table if not r["meets_ratio"]],
        "failures": failures[:50],
        "server_log_errors": server_errors,
        "table": table,
    }
    print_pages(result)
    return result


def print_pages(result: dict[str, Any]) -> None:
    sizes = result["items"]
    small, large = f"{sizes['small']:,}", f"{sizes['large']:,}"
    print(
        f"  pages on {result['database']}, {result['repeats']} requests each, ms "
        f"(ratio = p95 at {large} / p95 at {small}; r50 the same for p50; rows shown at each size):",
        flush=True,
    )
    header = ["page", f"p50 {small}", f"p95 {small}", f"p50 {large}", f"p95 {large}", "ratio", "r50", "rows"]
    print("    {:36s} {:>10s} {:>10s} {:>11s} {:>11s} {:>6s} {:>6s} {:>9s}".format(*header))
    for row in sorted(result["table"], key=lambda r: -(r["p95_ms_large"] or 0)):
        missed = [t for t, ok in (("p95", row["meets_p95"]), ("ratio", row["meets_ratio"])) if not ok]
        print(
            f"    {row['page']:36s} {row['p50_ms_small'] or 0:10.1f} {row['p95_ms_small'] or 0:10.1f} "
            f"{row['p50_ms_large'] or 0:11.1f} {row['p95_ms_large'] or 0:11.1f} {row['ratio_p95'] or 0:6.2f} "
            f"{row['ratio_p50'] or 0:6.2f} {str(row['rows_small']) + '/' + str(row['rows_large']):>9s}"
            + (f"  <- misses {' and '.join(missed)}" if missed else ""),
            flush=True,
        )
    for failure in result["failures"]:
        print(f"    failed request: {failure}", flush=True)


# --- main ----------------------------------------------------------------------------------------------------

SECTIONS = ("pg", "sqlite", "pages")


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, PostgreSQL first and SQLite beside them."""
    figures: dict[str, Any] = {}
    for database, prefix in (("postgres", ""), ("sqlite", "sqlite_")):
        load = results.get("load", {}).get(database)
        if load:
            paced, saturation = load["paced"], load["saturation"]
            figures.update(
                {
                    f"{prefix}p50_ms": paced["all"]["p50_ms"],
                    f"{prefix}p99_ms": paced["all"]["p99_ms"],
                    f"{prefix}claim_p50_ms": paced["claim"]["p50_ms"],
                    f"{prefix}claim_p99_ms": paced["claim"]["p99_ms"],
                    f"{prefix}decide_p50_ms": paced["decide"]["p50_ms"],
                    f"{prefix}decide_p99_ms": paced["decide"]["p99_ms"],
                    f"{prefix}decisions_per_s": paced["decisions_per_s"],
                    f"{prefix}errors": paced["errors"],
                    f"{prefix}max_decisions_per_s": saturation["decisions_per_s"],
                    f"{prefix}saturation_errors": saturation["errors"],
                }
            )
        pages = results.get("pages", {}).get(database)
        if pages:
            figures[f"{prefix}page_p95_ms_50k"] = pages["page_p95_ms_large"]
            figures[f"{prefix}page_worst"] = pages["worst_page"]
            figures[f"{prefix}page_max_ratio"] = pages["max_ratio_p95"]
            figures[f"{prefix}pages_missing_targets"] = sorted(
                set(pages["pages_missing_p95"]) | set(pages["pages_missing_ratio"])
            )
    return figures


def print_summary(results: dict[str, Any]) -> None:
    print()
    figures = headline(results)
    for key, value in figures.items():
        if isinstance(value, list):
            value = f"{len(value)} pages" + (
                f": {', '.join(value[:8])}{' ...' if len(value) > 8 else ''}" if value else ""
            )
        print(f"{key:32s} {value}")
    if "p99_ms" in figures:
        met = figures["p99_ms"] is not None and figures["p99_ms"] < TARGET_P99_MS and figures["errors"] == 0
        print(
            f"target p99 < {TARGET_P99_MS:.0f} ms and no errors (paced, PostgreSQL): {'met' if met else 'MISSED'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--items", type=int, default=50_000, help="pending items (load); items of the large dataset (pages)"
    )
    parser.add_argument("--small-items", type=int, default=1_000, help="items of the small dataset (pages)")
    parser.add_argument("--reviewers", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the paced run")
    parser.add_argument("--saturation", type=float, default=30.0, help="seconds of the run without pauses")
    parser.add_argument("--pace", type=float, default=1.0, help="mean seconds a reviewer looks at an item")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout of one request (s)")
    parser.add_argument("--page-repeats", type=int, default=40, help="timed requests per page and size")
    parser.add_argument("--page-warmup", type=int, default=3, help="rounds over every page not counted")
    parser.add_argument("--page-databases", default="postgres,sqlite")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run these sections (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--ramp",
        type=float,
        default=10.0,
        help="paced run: seconds over which the reviewers join; latencies are those of the --duration after it",
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        default=2,
        help="service processes sharing the port, as `sprout serve --workers N` (default 2: one per core here)",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        {"serve": child_serve, "reviewers": child_reviewers}[mode](*rest)
        return

    sections = args.only or list(SECTIONS)
    # Sections run alone merge into the existing results; each is written as soon as it is done.
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.only and args.out.is_file() else {}
    results.update(
        {
            "date": date.today().isoformat(),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "command": "python bench/review_bench.py " + " ".join(sys.argv[1:]),
            "config": {
                "items": args.items,
                "small_items": args.small_items,
                "reviewers": args.reviewers,
                "duration_s": args.duration,
                "saturation_s": args.saturation,
                "pace_s": args.pace,
                "timeout_s": args.timeout,
                "claim_n": CLAIM_BATCH,
                "claim_sort": UI_SORT,
                "page_repeats": args.page_repeats,
                "ramp_s": args.ramp,
                "server_workers": args.server_workers,
            },
            "targets": {
                "p99_ms": TARGET_P99_MS,
                "page_p95_ms": TARGET_PAGE_P95_MS,
                "page_ratio": TARGET_PAGE_RATIO,
            },
        }
    )

    def save() -> None:
        results.update(headline(results))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    started = time.perf_counter()
    for section, database in (("pg", "postgres"), ("sqlite", "sqlite")):
        if section in sections:
            print(f"1. load on {database}", flush=True)
            results.setdefault("load", {})[database] = load_section(database, args)
            save()
    if "pages" in sections:
        for database in args.page_databases.split(","):
            print(f"2. pages on {database}", flush=True)
            results.setdefault("pages", {})[database] = pages_section(database.strip(), args)
            save()
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    save()
    print_summary(results)
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
