"""Benchmark of Sprout's near-duplicate engine (greedy ROUGE-L dedup at threshold 0.7).

What it measures, in one run:
1. Time and peak memory of `sprout dedup`'s code path (app.dedup.file_dedup.dedup_file: read and validate the JSONL
   file, dedup, write kept lines and report) at 10K, 35K, 100K and 200K instructions, each size in a fresh
   subprocess, next to the peak RSS of an idle process that imported the same modules.
   10K is the first 10,000 real instructions, 35K all 35,516 of them; 100K and 200K add deterministic
   word-level mutants of real instructions (substitute / insert / delete / swap 1-3 words) and shuffle
   everything with a fixed seed, so that near-duplicates are realistic and spread over the file.
2. The rouge-score reference exactly as Alpaca uses it (tokenize with RougeScorer(["rougeL"])._tokenizer,
   score every candidate against every kept instruction with rouge_scorer._score_lcs, keep iff the maximum
   fmeasure <= 0.7), single process, on a seeded random sample grown until it has taken
   `--reference-seconds`; Sprout runs on the same sample `--repeats` times (median). Reported: both times, the
   ratio, and whether every keep/drop decision is identical. A second, shorter comparison on a prefix of the
   file in its own order (templates make near-duplicates dense there) checks the decisions where most records
   are dropped.
3. The event-loop lag while the generation pipeline's accept-step index (app.dedup.remote.IndexProcess, in a
   child process, called from a worker thread in chunks of 400 as the accept step does) dedups the 35K set: a
   heartbeat coroutine sleeps 1 ms at a time and the largest gap between its ticks is reported.

Usage (from the repository root):
    .venv/bin/python bench/dedup_bench.py [--data PATH] [--sizes 10000,35516,100000,200000]
Writes bench/results/dedup.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data" / "bench_instructions.jsonl.gz"
DEFAULT_OUT = REPO / "bench" / "results" / "dedup.json"
THRESHOLD = 0.7
SEED = 20261124


def load_instructions(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["instruction"] for line in handle]


def mutate(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    """1-3 word-level edits: the kind of near-duplicate an LLM produces when it paraphrases lazily."""
    words = text.split()
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(("substitute", "insert", "delete", "swap"))
        if op == "insert" or not words:
            words.insert(rng.randint(0, len(words)), rng.choice(vocabulary))
        elif op == "substitute":
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
        elif op == "delete" and len(words) > 3:
            del words[rng.randrange(len(words))]
        elif op == "swap" and len(words) > 1:
            at = rng.randrange(len(words) - 1)
            words[at], words[at + 1] = words[at + 1], words[at]
    return " ".join(words)


def dataset(real: list[str], size: int) -> list[str]:
    """The first `size` real instructions, or all of them plus seeded mutants, shuffled, up to `size`."""
    if size <= len(real):
        return real[:size]
    rng = random.Random(SEED + size)
    vocabulary = [w for text in real[::7] for w in text.split()]
    items = real + [mutate(rng.choice(real), rng, vocabulary) for _ in range(size - len(real))]
    rng.shuffle(items)
    return items


def write_jsonl(path: Path, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for text in texts:
            out.write(json.dumps({"instruction": text}, ensure_ascii=False) + "\n")


def peak_rss_mb() -> float:
    """Peak resident memory of this process image.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child started by a
    parent holding 200K instructions would report the parent's size.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# --- child processes ---------------------------------------------------------------------------------------


def child_idle() -> dict:
    import app.dedup.file_dedup  # noqa: F401 (the same imports as a real run)

    return {"peak_mb": peak_rss_mb()}


def child_dedup(path: Path, options: str = "{}") -> dict:
    from app.dedup.file_dedup import dedup_file

    with tempfile.TemporaryDirectory() as out_dir:
        summary = dedup_file(
            path,
            output_path=Path(out_dir) / "kept.jsonl",
            report_path=Path(out_dir) / "report.jsonl",
            threshold=THRESHOLD,
            **json.loads(options),
        )
    return {
        "seconds": summary.seconds,
        "peak_mb": peak_rss_mb(),
        "kept": summary.kept,
        "dropped": summary.dropped,
    }


def child_loop_lag(path: Path) -> dict:
    from app.dedup.file_dedup import read_texts
    from app.dedup.remote import IndexProcess

    texts = read_texts(path, "instruction")
    gaps: list[float] = []

    async def heartbeat(stop: asyncio.Event) -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def main() -> tuple[float, int]:
        stop = asyncio.Event()
        beat = asyncio.create_task(heartbeat(stop))
        started = time.perf_counter()
        index = IndexProcess(rouge_threshold=THRESHOLD)
        pairs = list(enumerate(texts))
        checks = []
        for start in range(0, len(pairs), 400):
            checks += await asyncio.to_thread(index.check_and_add_many, pairs[start : start + 400])
        index.close()
        elapsed = time.perf_counter() - started
        stop.set()
        await beat
        return elapsed, sum(not c.is_duplicate for c in checks)

    elapsed, kept = asyncio.run(main())
    ordered = sorted(gaps)
    return {
        "seconds": elapsed,
        "kept": kept,
        "max_loop_lag_ms": ordered[-1] * 1000,
        "p99_loop_lag_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000,
        "ticks": len(gaps),
    }


def run_child(mode: str, path: Path | None = None, options: dict | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode]
    if path is not None:
        command.append(str(path))
    if options:
        command.append(json.dumps(options))
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the rouge-score reference ------------------------------------------------------------------------------


def reference_greedy(texts: list[str], budget_seconds: float) -> tuple[list[bool], float]:
    """Alpaca's loop with rouge-score, stopped after the first text that ends past the budget."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    kept_tokens: list[list[str]] = []
    decisions: list[bool] = []
    started = time.perf_counter()
    for text in texts:
        tokens = scorer._tokenizer.tokenize(text)
        scores = [rouge_scorer._score_lcs(tokens, other).fmeasure for other in kept_tokens]
        keep = max(scores, default=0.0) <= THRESHOLD
        decisions.append(keep)
        if keep:
            kept_tokens.append(tokens)
        if time.perf_counter() - started >= budget_seconds:
            break
    return decisions, time.perf_counter() - started


def sprout_greedy(texts: list[str], repeats: int) -> tuple[list[bool], float]:
    from app.dedup import NearDuplicateIndex

    times, decisions = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        index = NearDuplicateIndex(rouge_threshold=THRESHOLD, neighbour_floor=THRESHOLD, exact=False)
        checks = index.check_and_add_many(list(enumerate(texts)))
        times.append(time.perf_counter() - started)
        decisions = [not c.is_duplicate for c in checks]
    return decisions, statistics.median(times)


def compare(name: str, texts: list[str], budget: float, repeats: int) -> dict:
    ref_decisions, ref_seconds = reference_greedy(texts, budget)
    sample = texts[: len(ref_decisions)]
    ours, our_seconds = sprout_greedy(sample, repeats)
    result = {
        "sample": name,
        "items": len(sample),
        "kept": sum(ref_decisions),
        "rouge_score_seconds": round(ref_seconds, 3),
        "sprout_seconds_median": round(our_seconds, 5),
        "speedup": round(ref_seconds / our_seconds, 1),
        "identical_decisions": ours == ref_decisions,
    }
    print(
        f"  {name}: {len(sample)} items ({sum(ref_decisions)} kept): rouge-score {ref_seconds:.1f} s, "
        f"Sprout {our_seconds * 1000:.1f} ms (median of {repeats}), {ref_seconds / our_seconds:,.0f}x, "
        f"identical decisions: {ours == ref_decisions}",
        flush=True,
    )
    return result


# --- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="bench_instructions.jsonl.gz")
    parser.add_argument("--sizes", default="10000,35516,100000,200000")
    parser.add_argument(
        "--reference-seconds", type=float, default=100.0, help="time budget of the main reference"
    )
    parser.add_argument("--repeats", type=int, default=7, help="Sprout runs per compared sample (median)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        child = {"idle": child_idle, "dedup": child_dedup, "lag": child_loop_lag}[mode]
        result = child(*[Path(rest[0]), *rest[1:]] if rest else [])
        print(json.dumps(result))
        return

    started = time.perf_counter()
    real = load_instructions(args.data)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{len(real)} real instructions from {args.data.name}; {os.cpu_count()} CPUs", flush=True)
    idle = run_child("idle")["peak_mb"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for size in sizes:
            files[size] = Path(tmp) / f"bench_{size}.jsonl"
            write_jsonl(files[size], dataset(real, size))
        for size in sizes:
            row = run_child("dedup", files[size])
            row = {"items": size, **row, "increment_mb": row["peak_mb"] - idle}
            rows.append(row)
            print(
                f"  {size:>7} items: {row['seconds']:7.2f} s, peak {row['peak_mb']:6.0f} MB "
                f"(+{row['increment_mb']:.0f} over idle), kept {row['kept']}",
                flush=True,
            )
        real_file = files.get(len(real)) or Path(tmp) / "real.jsonl"
        if not real_file.exists():
            write_jsonl(real_file, real)
        # Opt-in costs: neighbours of kept lines down to F1 0.5 (the index default, used by the pipeline),
        # and the fuzzy signal (an exhaustive scan) on the first 10K lines.
        options = []
        for label, size_file, opts in (
            ("--neighbour-floor 0.5", real_file, {"neighbour_floor": 0.5}),
            ("--fuzzy-cutoff 90 (ratio)", files.get(10000), {"fuzzy_cutoff": 90.0}),
        ):
            if size_file is None:
                continue
            row = run_child("dedup", size_file, opts)
            items = len(real) if size_file == real_file else 10000
            options.append({"option": label, "items": items, **row})
            print(f"  {label} on {items} items: {row['seconds']:.2f} s, kept {row['kept']}", flush=True)
        lag = run_child("lag", real_file)
        print(
            f"  event loop while the accept-step index dedups {len(real)} items: "
            f"max gap {lag['max_loop_lag_ms']:.1f} ms "
            f"(p99 {lag['p99_loop_lag_ms']:.1f} ms) over {lag['seconds']:.1f} s",
            flush=True,
        )

    shuffled = list(real)
    random.Random(SEED).shuffle(shuffled)
    print("rouge-score reference (single process, as Alpaca):", flush=True)
    main_comparison = compare("random sample", shuffled, args.reference_seconds, args.repeats)
    file_order = compare("file order", real, args.reference_seconds / 2, args.repeats)

    by_size = {row["items"]: row for row in rows}
    real_row = by_size.get(len(real), {})
    results = {
        "date": date.today().isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": "python bench/dedup_bench.py " + " ".join(sys.argv[1:]),
        "threshold": THRESHOLD,
        "seconds_35k": real_row.get("seconds"),
        "peak_mb_35k": real_row.get("peak_mb"),
        "speedup_vs_rouge_score": main_comparison["speedup"],
        "identical_decisions": main_comparison["identical_decisions"] and file_order["identical_decisions"],
        "max_loop_lag_ms": round(lag["max_loop_lag_ms"], 2),
        "idle_process_mb": idle,
        "sizes": rows,
        "options": options,
        "loop_lag": lag,
        "reference": [main_comparison, file_order],
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_table(results)
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


def print_table(results: dict) -> None:
    print()
    print(f"{'items':>8} {'seconds':>9} {'peak MB':>9} {'+MB':>7} {'kept':>8}")
    for row in results["sizes"]:
        print(
            f"{row['items']:>8} {row['seconds']:>9.2f} {row['peak_mb']:>9.0f} {row['increment_mb']:>7.0f} "
            f"{row['kept']:>8}"
        )
    print(f"idle process: {results['idle_process_mb']:.0f} MB")
    print(
        f"speed-up vs rouge-score: {results['speedup_vs_rouge_score']:,.0f}x; identical decisions: "
        f"{results['identical_decisions']}; max event-loop lag: {results['max_loop_lag_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
