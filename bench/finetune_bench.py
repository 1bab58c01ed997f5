"""Benchmark of Sprout's fine-tuning against a plain TRL script, and the issue's smoke run.

Part `run_ratio`: on the same chat data, model and hyperparameters, alternately run
1. bench/trl_plain.py, a minimal TRL SFT + PEFT LoRA script, as a child process, and
2. a Sprout job: `sprout serve` runs as its own process, the official openai SDK uploads the file and creates
   the job, the service's worker starts its trainer process,
`--repeats` times each (which goes first alternates). Reported: training speed (trained tokens / wall time of
the trainer.train() call, as each reports it), peak memory (the process's ru_maxrss: os.wait4's for the plain
script, the trainer's own getrusage at its end for the job: the same measure) and the end-to-end time (the
script's whole run; the job's from create to the client seeing it succeeded). Medians over the repeats;
targets: tokens/s ratio >= 0.9, peak memory ratio <= 1.1. The job does what a job does (base and tuned sample
answers, a checkpoint per epoch, the merged model), so its peak covers all of that, not training alone.

Part `run_smoke` (bench/finetune_service.py): 200 approved items -> a snapshot -> a job with the default model,
1 epoch, sequences up to 512 tokens; target: within 10 minutes, validation loss after below before. Its loss
curve goes to docs/img/finetune_smoke_loss.png.

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

from bench.finetune_service import run_job, run_smoke, sprout_service  # noqa: E402

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


def run_ratio(args: argparse.Namespace) -> dict[str, Any]:
    """Plain TRL vs the Sprout trainer, alternating; medians of tokens/s and peak memory, and their ratios."""
    model = Path(args.model).resolve() if args.model else default_checkpoint()
    from app.finetune.trainer.train import use_bf16

    args.bf16 = use_bf16()  # the precision the Sprout trainer picks here; the plain script is told the same
    runs: dict[str, list[dict[str, Any]]] = {"trl": [], "sprout": []}
    with (
        tempfile.TemporaryDirectory(prefix="sprout-ft-bench-") as tmp,
        sprout_service(Path(tmp), model, args.max_length) as service,
    ):
        work = Path(tmp)
        data = work / "train.jsonl"
        with data.open("w", encoding="utf-8") as handle:
            for example in build_examples(Path(args.shared_data), args.examples):
                handle.write(json.dumps(example, ensure_ascii=False) + "\n")
        runners = {
            "trl": lambda name: run_plain(args, model, data, work, name),
            "sprout": lambda name: run_job(service, data, args),
        }
        for repeat in range(args.repeats):
            order = ["trl", "sprout"] if repeat % 2 == 0 else ["sprout", "trl"]
            for kind in order:
                load = os.getloadavg()[0]
                run = runners[kind](f"{kind}-{repeat}")
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
    end_to_end = {
        "sprout": statistics.median(r["end_to_end_s"] for r in runs["sprout"]),
        "trl": statistics.median(r["wall_s"] for r in runs["trl"]),
    }
    return {
        "end_to_end_s_sprout_job": end_to_end["sprout"],
        "end_to_end_s_trl_script": end_to_end["trl"],
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


SMOKE_PREFIXES = ["", "Answer briefly. ", "请回答："]


def smoke_pairs(shared: Path, n: int) -> list[tuple[str, str, str]]:
    """N distinct (instruction, input, output) items from the Self-Instruct seed tasks' instances; past the
    175 instances they come again with a short prefix on the instruction."""
    pairs = []
    for line in (shared / SEED_TASKS).read_text(encoding="utf-8").splitlines():
        if line:
            task = json.loads(line)
            pairs += [(task["instruction"], i["input"], i["output"]) for i in task["instances"]]
    return [
        (
            SMOKE_PREFIXES[(k // len(pairs)) % len(SMOKE_PREFIXES)] + pairs[k % len(pairs)][0],
            *pairs[k % len(pairs)][1:],
        )
        for k in range(n)
    ]


def run_smoke_part(args: argparse.Namespace) -> dict[str, Any]:
    model = Path(args.model).resolve() if args.model else default_checkpoint()
    with (
        tempfile.TemporaryDirectory(prefix="sprout-ft-smoke-") as tmp,
        sprout_service(Path(tmp), model, 512) as service,
    ):
        smoke = run_smoke(service, smoke_pairs(Path(args.shared_data), 200), Path(args.png), args.batch_size)
    print(
        f" smoke: {smoke['smoke_seconds']:.0f} s (target <= 600), validation loss {smoke['valid_loss_before']:.3f}"
        f" -> {smoke['valid_loss_after']:.3f}",
        file=sys.stderr,
    )
    return smoke


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "ratio": run_ratio,
    "smoke": run_smoke_part,
}


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
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--png", default=str(REPO / "docs" / "img" / "finetune_smoke_loss.png"))
    parser.add_argument("--parts", default="ratio,smoke", help="which parts to run (comma-separated)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    # A run of some parts keeps the other parts' figures; each part's figures are written as soon as it ends.
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    result["machine"] = machine_info()
    for name in args.parts.split(","):
        result.update(PARTS[name](args))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if "tokens_per_s_ratio" in result:
        print(
            f"tokens/s: sprout {result['tokens_per_s_sprout']:.1f}, trl {result['tokens_per_s_trl']:.1f}, ratio "
            f"{result['tokens_per_s_ratio']:.3f} (target >= 0.9); peak MB: sprout {result['peak_mb_sprout']:.0f}, "
            f"trl {result['peak_mb_trl']:.0f}, ratio {result['peak_ratio']:.3f} (target <= 1.1); end to end: job "
            f"{result['end_to_end_s_sprout_job']:.0f} s, script {result['end_to_end_s_trl_script']:.0f} s",
            file=sys.stderr,
        )
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
