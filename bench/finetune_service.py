"""The parts of bench/finetune_bench.py that go through a running Sprout service, as a user's job does.

`SproutService` starts `sprout serve` as its own process (SQLite in a temporary directory, the base model from
the given checkpoint) and hands out the official openai SDK pointed at it with a service token. `run_job` is one
fine-tuning job over that API: what the ratio compares with the plain TRL script (its tokens/s and peak memory
as the trainer reports them, and the end-to-end time from create to succeeded). `run_smoke` is the issue's smoke
run: 200 approved items -> a snapshot -> a job, 1 epoch, sequences up to 512 tokens; its loss curve is drawn
into a PNG.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai

REPO = Path(__file__).resolve().parent.parent
MODEL = "SmolLM2-135M-Instruct"
BASE_LR = 2e-4  # FinetuneModelSettings.learning_rate: the job's rate is this times its multiplier


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SproutService:
    def __init__(self, base_url: str, token: str, database_url: str) -> None:
        self.base_url = base_url
        self.token = token
        self.database_url = database_url

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=self.token, max_retries=2, timeout=120)

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=120
        )


@contextmanager
def sprout_service(work: Path, checkpoint: Path, max_length: int) -> Iterator[SproutService]:
    """`sprout serve` on a free port until the block ends (stopped by its PID)."""
    from app.auth.roles import Role
    from app.auth.service import create_token, create_user
    from app.core.db import create_db_engine, make_session_factory, run_migrations, transaction

    database_url = f"sqlite:///{work / 'bench.db'}"
    run_migrations(database_url)
    engine = create_db_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        token, _ = create_token(session, create_user(session, "bench", Role.service), name="bench")
    engine.dispose()
    port = _free_port()
    env = {
        **os.environ,
        "SPROUT_DATABASE_URL": database_url,
        "SPROUT_FINETUNE_MODELS": json.dumps({MODEL: {"path": str(checkpoint), "max_length": max_length}}),
        "SPROUT_FINETUNE_DIR": str(work / "finetune"),
        "SPROUT_WORKER_POLL_SECONDS": "0.2",
        "HF_HUB_OFFLINE": "1",
    }
    log = (work / "sprout-serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--no-bootstrap"],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"sprout serve did not start:\n{(work / 'sprout-serve.log').read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield SproutService(base_url, token, database_url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_until_done(client: openai.OpenAI, job_id: str, timeout: float = 3600) -> tuple[Any, float]:
    """The finished job, and when (time.monotonic()) the client first saw it finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job, time.monotonic()
        time.sleep(0.5)
    raise RuntimeError(f"job {job_id} did not finish in {timeout} s")


def run_job(service: SproutService, data: Path, args: Any, validation: Path | None = None) -> dict[str, Any]:
    """One job over the API with the bench's hyperparameters: speed and peak memory as the trainer reports
    them (the same measures the plain script prints), and the end-to-end time from create to succeeded."""
    client = service.sdk()
    training = client.files.create(file=(data.name, data.read_bytes()), purpose="fine-tune")
    valid = (
        client.files.create(file=(validation.name, validation.read_bytes()), purpose="fine-tune")
        if validation
        else None
    )
    hyperparameters = {
        "n_epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate_multiplier": args.lr / BASE_LR,
    }
    started = time.monotonic()
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training.id,
        validation_file=valid.id if valid else None,
        seed=args.seed,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
    )
    done, seen = wait_until_done(client, job.id)
    if done.status != "succeeded":
        raise RuntimeError(f"the job ended {done.status}: {done.error}")
    evaluation = done.model_extra["evaluation"]
    return {
        "job": done.id,
        "trained_tokens": done.trained_tokens,
        "train_runtime_s": evaluation["train_runtime_s"],
        "tokens_per_s": evaluation["tokens_per_s"],
        "peak_mb": evaluation["peak_rss_mb"],
        "masking": evaluation["masking"],
        "end_to_end_s": round(seen - started, 1),
        "evaluation": evaluation,
    }


def approved_items(service: SproutService, pairs: list[tuple[str, str, str]], name: str) -> int:
    """A dataset holding `pairs` as approved items (written straight into the database: the bench measures
    fine-tuning, not review)."""
    from sqlalchemy import insert

    from app.core.db import create_db_engine, make_session_factory, transaction
    from app.generation.models import Item, ItemStatus
    from app.reports.language import script_language

    with service.http() as http:
        created = http.post("/v1/datasets", json={"name": name})
        created.raise_for_status()
        dataset_id = created.json()["id"]
    engine = create_db_engine(service.database_url)
    rows = [
        {
            "dataset_id": dataset_id,
            "instruction": instruction,
            "input": input_,
            "output": output,
            "status": ItemStatus.approved,
            "language": script_language(instruction),
            "model": "bench",
        }
        for instruction, input_, output in pairs
    ]
    with transaction(make_session_factory(engine)) as session:
        session.execute(insert(Item), rows)
    engine.dispose()
    return dataset_id


def loss_curve_png(metrics: list[dict[str, Any]], valid: tuple[float, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in metrics if isinstance(m.get("train_loss"), float)]
    losses = [m["train_loss"] for m in metrics if isinstance(m.get("train_loss"), float)]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    axis.plot(steps, losses, label="train loss (per step)", color="#2f7d32")
    axis.scatter(
        [0, max(steps or [1])], list(valid), color="#c62828", zorder=3, label="validation loss: before, after"
    )
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title("Smoke run: SmolLM2-135M-Instruct, LoRA r=16, 200 approved pairs, 1 epoch (CPU)")
    axis.title.set_fontsize(9)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def run_smoke(
    service: SproutService, pairs: list[tuple[str, str, str]], png: Path, batch_size: int
) -> dict[str, Any]:
    """The issue's smoke run: 200 approved pairs, a snapshot (train + validation), a job with the default
    model, 1 epoch, sequences up to 512 tokens (the service's max_length); target: done within 10 minutes,
    validation loss after below before."""
    dataset_id = approved_items(service, pairs, "smoke")
    client = service.sdk()
    with service.http() as http:
        answer = http.post(
            f"/v1/datasets/{dataset_id}/snapshots", json={"seed": 7, "validation_fraction": 0.1}
        )
        answer.raise_for_status()
        snapshot = answer.json()
    started = time.monotonic()
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=snapshot["training_file"],
        validation_file=snapshot["validation_file"],
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": batch_size}},
        },
    )
    done, seen = wait_until_done(client, job.id)
    if done.status != "succeeded":
        raise RuntimeError(f"the smoke job ended {done.status}: {done.error}")
    events = client.fine_tuning.jobs.list_events(job.id, limit=100)
    metrics = []
    while True:
        metrics += [e.data for e in events.data if e.type == "metrics" and e.data]
        if not events.has_more:
            break
        events = client.fine_tuning.jobs.list_events(job.id, limit=100, after=events.data[-1].id)
    metrics.sort(key=lambda m: m["step"])
    evaluation = done.model_extra["evaluation"]
    before, after = evaluation["valid_loss_before"], evaluation["valid_loss_after"]
    loss_curve_png(metrics, (before, after), png)
    return {
        "smoke_seconds": round(seen - started, 1),
        "smoke_within_10_min": seen - started <= 600,
        "valid_loss_before": before,
        "valid_loss_after": after,
        "smoke_loss_improved": after < before,
        "smoke": {
            "items": snapshot["counts"],
            "trained_tokens": done.trained_tokens,
            "steps": len(metrics),
            "train_runtime_s": evaluation["train_runtime_s"],
            "tokens_per_s": evaluation["tokens_per_s"],
            "peak_mb": evaluation["peak_rss_mb"],
            "masking": evaluation["masking"],
            "samples": evaluation.get("samples", []),
            "loss_curve_png": str(png.relative_to(REPO)) if png.is_relative_to(REPO) else str(png),
        },
    }
