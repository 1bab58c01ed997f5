"""Benchmark of Sprout's fine-tuning trainer against a plain TRL script.

Part `run_ratio` (this file): on the same chat data, model and hyperparameters, alternately run
1. bench/trl_plain.py, a minimal TRL SFT + PEFT LoRA script, and
2. the Sprout trainer process (`python -m app.finetune.trainer cfg.json`, as the job runner starts it),
each as a child process, `--repeats` times each (which goes first alternates). Reported: training speed
(trained tokens / wall time of the trainer.train() call, as each process reports it) and peak memory (the
child's ru_maxrss from os.wait4: exact per child, measured the same way for both). Medians over the repeats;
targets: tokens/s ratio >= 0.9, peak memory ratio <= 1.1. The Sprout run does what a job does (base and tuned
sample answers, a checkpoint per epoch, the merged model), so its peak covers all of that, not training alone.

Data: N chat examples from the Self-Instruct seed tasks in ../shared/data (SPROUT_SHARED_DATA overrides):
instruction (+ input) -> user, output -> assistant; past the 175 tasks the same tasks come again with a system
message, so every example is distinct. Written to a temporary directory, never into the repository.

Usage (from the repository root):
    .venv/bin/python bench/finetune_bench.py [--examples 200] [--repeats 2] [--epochs 1] [--out PATH]
Prints the figures and writes the JSON to --out (default bench/results/finetune.json).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHARED_DATA = Path(os.environ.get("SPROUT_SHARED_DATA", REPO.parent / "shared" / "data"))
SEED_TASKS = "self_instruct_seed_tasks.jsonl"
DEFAULT_OUT = REPO / "bench" / "results" / "finetune.json"
SYSTEM_VARIANTS = [None, "You are a careful assistant.", "Answer helpfully and precisely.", "Be concise."]


def build_examples(shared: Path, n: int) -> list[dict[str, Any]]:
    """N OpenAI chat examples from the Self-Instruct seeds; round r > 0 adds system message r."""
    tasks = [
        json.loads(line) for line in (shared / SEED_TASKS).read_text(encoding="utf-8").splitlines() if line
    ]
    pairs = []
    for task in tasks:
        for instance in task["instances"]:
            user = task["instruction"] + (f"\n\n{instance['input']}" if instance["input"].strip() else "")
            pairs.append((user, instance["output"]))
    examples = []
    for index in range(n):
        round_, position = divmod(index, len(pairs))
        user, assistant = pairs[position]
        system = SYSTEM_VARIANTS[round_ % len(SYSTEM_VARIANTS)]
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        examples.append({"messages": messages})
    return examples


def default_checkpoint() -> Path:
    """The embedded model as a Hugging Face checkpoint in Sprout's cache (made on first use, ~30 s)."""
    from app.core.config import DEFAULT_MODEL_NAME
    from app.llm.checkpoint import prepare_hf_checkpoint

    root = os.environ.get("SPROUT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sprout"
    )
    return prepare_hf_checkpoint(Path(root) / "checkpoints" / DEFAULT_MODEL_NAME).resolve()


def run_child(command: list[str], log_dir: Path, name: str) -> dict[str, Any]:
    """Run one child to completion; its exit code, wall time and peak RSS (os.wait4's rusage of that child)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    stdout_path, stderr_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    started = time.monotonic()
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=log_dir, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"{name} exited with {process.returncode}:\n{stderr_path.read_text()[-4000:]}")
    return {"wall_s": round(wall, 1), "peak_mb": round(usage.ru_maxrss / 1024, 1), "stdout": stdout_path}


def run_plain(args: argparse.Namespace, model: Path, data: Path, work: Path, name: str) -> dict[str, Any]:
    command = [
        sys.executable,
        str(REPO / "bench" / "trl_plain.py"),
        *("--model", str(model), "--data", str(data), "--epochs", str(args.epochs)),
        *("--batch-size", str(args.batch_size), "--lr", str(args.lr), "--max-length", str(args.max_length)),
        *("--seed", str(args.seed), "--lora-r", str(args.lora_r), "--lora-alpha", str(args.lora_alpha)),
        *("--lora-dropout", str(args.lora_dropout)),
        *(("--threads", str(args.threads)) if args.threads else ()),
        *(("--bf16",) if args.bf16 else ()),
    ]
    child = run_child(command, work, name)
    report = json.loads(child["stdout"].read_text().strip().splitlines()[-1])
    return {**report, "peak_mb": child["peak_mb"], "wall_s": child["wall_s"]}


def run_sprout(args: argparse.Namespace, model: Path, data: Path, work: Path, name: str) -> dict[str, Any]:
    output_dir = work / name
    config = {
        "base_model": str(model),
        "train_file": str(data),
        "validation_file": None,
        "output_dir": str(output_dir),
        "n_epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "seed": args.seed,
        "max_length": args.max_length,
        "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "lora_dropout": args.lora_dropout,
        "max_steps": None,
        "threads": args.threads,
        "save_steps": None,
        "eval_samples": args.eval_samples,
        "merge": True,
        "resume": False,
    }
    config_path = work / f"{name}.json"
    config_path.write_text(json.dumps(config))
    child = run_child([sys.executable, "-m", "app.finetune.trainer", str(config_path)], work, name)
    events = [json.loads(line) for line in (output_dir / "events.jsonl").read_text().splitlines() if line]
    result = next(event for event in events if event["type"] == "result")
    return {
        "trained_tokens": result["trained_tokens"],
        "train_runtime_s": result["train_runtime_s"],
        "tokens_per_s": result["tokens_per_s"],
        "masking": result["masking"],
        "peak_mb": child["peak_mb"],
        "wall_s": child["wall_s"],
    }


def run_ratio(args: argparse.Namespace) -> dict[str, Any]:
    """Plain TRL vs the Sprout trainer, alternating; medians of tokens/s and peak memory, and their ratios."""
    model = Path(args.model).resolve() if args.model else default_checkpoint()
    from app.finetune.trainer.train import use_bf16

    args.bf16 = use_bf16()  # the precision the Sprout trainer picks here; the plain script is told the same
    runs: dict[str, list[dict[str, Any]]] = {"trl": [], "sprout": []}
    with tempfile.TemporaryDirectory(prefix="sprout-ft-bench-") as tmp:
        work = Path(tmp)
        data = work / "train.jsonl"
        with data.open("w", encoding="utf-8") as handle:
            for example in build_examples(Path(args.shared_data), args.examples):
                handle.write(json.dumps(example, ensure_ascii=False) + "\n")
        runners = {"trl": run_plain, "sprout": run_sprout}
        for repeat in range(args.repeats):
            order = ["trl", "sprout"] if repeat % 2 == 0 else ["sprout", "trl"]
            for kind in order:
                load = os.getloadavg()[0]
                run = runners[kind](args, model, data, work, f"{kind}-{repeat}")
                run["loadavg_1m_before"] = round(load, 2)
                runs[kind].append(run)
                print(
                    f"{kind:>6} #{repeat}: {run['tokens_per_s']:8.1f} tokens/s  {run['trained_tokens']} tokens in "
                    f"{run['train_runtime_s']:.1f} s  peak {run['peak_mb']:.0f} MB  (load {load:.2f})",
                    file=sys.stderr,
                )
    speed = {kind: statistics.median(r["tokens_per_s"] for r in rs) for kind, rs in runs.items()}
    peak = {kind: statistics.median(r["peak_mb"] for r in rs) for kind, rs in runs.items()}
    tokens = {r["trained_tokens"] for rs in runs.values() for r in rs}
    return {
        "tokens_per_s_sprout": speed["sprout"],
        "tokens_per_s_trl": speed["trl"],
        "tokens_per_s_ratio": round(speed["sprout"] / speed["trl"], 3),
        "peak_mb_sprout": peak["sprout"],
        "peak_mb_trl": peak["trl"],
        "peak_ratio": round(peak["sprout"] / peak["trl"], 3),
        "same_trained_tokens": len(tokens) == 1,
        "ratio_runs": runs,
        "ratio_config": {
            "model": str(model),
            "examples": args.examples,
            "repeats": args.repeats,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "max_length": args.max_length,
            "seed": args.seed,
            "lora_r": args.lora_r,
            "lora_alpha": args.lora_alpha,
            "lora_dropout": args.lora_dropout,
            "threads": args.threads,
            "sprout_eval_samples": args.eval_samples,
            "bf16": args.bf16,
        },
    }


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("torch", "transformers", "trl", "peft", "datasets", "accelerate"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": date.today().isoformat(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions,
    }


PARTS: list[Callable[[argparse.Namespace], dict[str, Any]]] = [run_ratio]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", help="Hugging Face checkpoint dir (default: the embedded model, converted)"
    )
    parser.add_argument("--shared-data", default=str(SHARED_DATA))
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in both (default: torch's)")
    parser.add_argument("--eval-samples", type=int, default=3, help="the Sprout run's sample answers")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result: dict[str, Any] = {"machine": machine_info()}
    for part in PARTS:
        result.update(part(args))
    print(
        f"tokens/s: sprout {result['tokens_per_s_sprout']:.1f}, trl {result['tokens_per_s_trl']:.1f}, "
        f"ratio {result['tokens_per_s_ratio']:.3f} (target >= 0.9); peak MB: sprout {result['peak_mb_sprout']:.0f}, "
        f"trl {result['peak_mb_trl']:.0f}, ratio {result['peak_ratio']:.3f} (target <= 1.1)",
        file=sys.stderr,
    )
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
