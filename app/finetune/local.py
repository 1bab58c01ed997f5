"""The local trainer's supervisor: TRL + PEFT run in a process of their own (app/finetune/trainer), so the
service stays responsive and a crash or an out-of-memory kill takes only that process.

The trainer appends JSON events to OUTPUT_DIR/events.jsonl; this side turns them into job events, checkpoints
and, at the end, result files. It renews the lease as it goes; a cancel (or a lost lease, or a stopping worker)
stops the trainer's whole process group: SIGTERM, then SIGKILL after the grace period, then it is reaped, so no
process and no zombie stays behind. With SPROUT_FINETUNE_MEMORY_LIMIT_MB set, a trainer whose resident memory
grows past it is stopped and its job fails as out_of_memory (an address-space limit is no good: PyTorch
reserves far more address space than it uses, and some of its allocators spin instead of failing). Work
directories keep checkpoints, so a job released by a stopping worker resumes where it was.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import shutil
import signal
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from app.core.config import FinetuneModelSettings
from app.core.db import transaction
from app.finetune.files import iter_content, store_file
from app.finetune.models import FineTuneCheckpoint, FineTuneJob
from app.finetune.runner import FinetuneContext, base_model_path
from app.finetune.schemas import tuned_model_name
from app.finetune.service import add_event, resolve_hyperparameters
from app.finetune.serving import register_adapter
from app.jobs.models import JobStatus

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
STDERR_TAIL = 4000


def work_dir(ctx: FinetuneContext, job: FineTuneJob) -> Path:
    return (ctx.settings.finetune_dir / job.public_id).resolve()


def _write_inputs(ctx: FinetuneContext, job: FineTuneJob, workdir: Path) -> tuple[Path, Path | None, int]:
    workdir.mkdir(parents=True, exist_ok=True)
    train = workdir / "train.jsonl"
    with train.open("wb") as out:
        for data in iter_content(ctx.sessions, job.training_file_id):
            out.write(data)
    with train.open("rb") as lines:
        examples = sum(1 for line in lines if line.strip())
    valid = None
    if job.validation_file_id is not None:
        valid = workdir / "valid.jsonl"
        with valid.open("wb") as out:
            for data in iter_content(ctx.sessions, job.validation_file_id):
                out.write(data)
    return train, valid, examples


class EventTail:
    """Reads the complete lines the trainer appended since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        events = []
        for line in data[: end + 1].splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("trainer wrote an unreadable event line: %r", line[:200])
        return events


def _job_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """A trainer event as a job event (None for those stored otherwise)."""
    kind = event.get("type")
    if kind == "message":
        level = event.get("level") if event.get("level") in ("info", "warn", "error") else "info"
        return {"message": str(event.get("message", "")), "level": level}
    if kind == "metrics":
        data = event.get("data") or {}
        parts = [f"Step {data.get('step')}/{data.get('total_steps')}"]
        for key in ("train_loss", "valid_loss"):
            if isinstance(data.get(key), int | float):
                parts.append(f"{key}={data[key]:.4f}")
        return {
            "message": ": ".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0],
            "type_": "metrics",
            "data": data,
        }
    if kind == "error":
        return {"message": f"Trainer error: {event.get('message')}", "level": "error"}
    return None


async def _stop(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the trainer's process group, SIGKILL it after `grace` seconds, and reap it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            await asyncio.wait_for(process.wait(), timeout=wait)
            break
        except TimeoutError:
            continue
    try:  # whatever the trainer forked dies with its group
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    await process.wait()


def _pack(directory: Path, archive: Path, *, compress: bool) -> Path:
    with tarfile.open(archive, "w:gz" if compress else "w") as tar:
        tar.add(directory, arcname=directory.name)
    return archive


def _chunks(path: Path) -> Any:
    with path.open("rb") as f:
        while data := f.read(1 << 20):
            yield data


def _metrics_csv(metrics: list[dict[str, Any]]) -> bytes:
    columns = [
        "step",
        "epoch",
        "train_loss",
        "valid_loss",
        "learning_rate",
        "tokens_per_s",
        "train_mean_token_accuracy",
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in metrics:
        writer.writerow(row)
    return out.getvalue().encode()


def _store_results(
    ctx: FinetuneContext,
    job: FineTuneJob,
    workdir: Path,
    result: dict[str, Any],
    metrics: list[dict[str, Any]],
) -> list[str]:
    """The metrics CSV, the adapter (tar.gz) and the merged checkpoint (tar: safetensors do not compress) as
    `fine-tune-results` files, in one transaction."""
    (workdir / "step_metrics.csv").write_bytes(_metrics_csv(metrics))
    outputs = [(workdir / "step_metrics.csv", "step_metrics.csv")]
    outputs.append(
        (_pack(workdir / result["adapter_dir"], workdir / "adapter.tar.gz", compress=True), "adapter.tar.gz")
    )
    if result.get("merged_dir"):
        outputs.append(
            (_pack(workdir / result["merged_dir"], workdir / "merged.tar", compress=False), "merged.tar")
        )
    with transaction(ctx.sessions) as session:
        ids = [
            store_file(
                session,
                _chunks(path),
                filename=f"{job.public_id}-{name}",
                purpose="fine-tune-results",
                created_by=job.created_by,
            ).public_id
            for path, name in outputs
        ]
    for path, _ in outputs:
        path.unlink()
    return ids


def _store_checkpoint(ctx: FinetuneContext, step: int, metrics: dict[str, Any]) -> None:
    from sqlalchemy import select

    with transaction(ctx.sessions) as session:
        exists = session.scalar(
            select(FineTuneCheckpoint.id).where(
                FineTuneCheckpoint.job_id == ctx.claim.job_id, FineTuneCheckpoint.step_number == step
            )
        )
        if exists is None:
            session.add(FineTuneCheckpoint(job_id=ctx.claim.job_id, step_number=step, metrics=metrics))


@dataclass
class Supervised:
    """What the supervisor saw of one trainer run."""

    metrics: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None
    cancelled: bool = False
    over_memory_mb: float | None = None  # the trainer's memory when the guard stopped it


def _trainer_config(
    ctx: FinetuneContext,
    job: FineTuneJob,
    model: FinetuneModelSettings,
    paths: dict[str, Any],
    hp: dict[str, Any],
) -> dict[str, Any]:
    settings = ctx.settings
    return {
        **paths,
        "n_epochs": hp["n_epochs"],
        "batch_size": hp["batch_size"],
        "learning_rate": hp["learning_rate"],
        "seed": job.seed,
        "max_length": model.max_length,
        "lora_r": model.lora_r,
        "lora_alpha": model.lora_alpha,
        "lora_dropout": model.lora_dropout,
        "max_steps": settings.finetune_max_steps,
        "threads": settings.finetune_threads,
        "resume": True,
    }


def _memory_mb(pid: int) -> float:
    """Resident memory of the trainer and anything it started."""
    try:
        process = psutil.Process(pid)
        members = [process, *process.children(recursive=True)]
        return sum(m.memory_info().rss for m in members) / 2**20
    except psutil.Error:
        return 0.0


async def _supervise(
    ctx: FinetuneContext, process: asyncio.subprocess.Process, tail: EventTail
) -> Supervised:
    """Follow the trainer until it exits, is cancelled, or outgrows the memory limit: store its events and
    checkpoints as they come, renew the lease on every look."""
    settings = ctx.settings
    seen = Supervised()
    while True:
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), timeout=POLL_SECONDS)
            exited = True
        except TimeoutError:
            exited = False
        events = []
        for event in tail.read():
            kind = event.get("type")
            if kind == "metrics":
                seen.metrics.append(event.get("data") or {})
            elif kind == "checkpoint":
                step = int(event.get("step", 0))
                await asyncio.to_thread(_store_checkpoint, ctx, step, event.get("metrics") or {})
                events.append({"message": f"Checkpoint saved at step {step}"})
            elif kind == "evaluation":
                seen.evaluation.update(event.get("data") or {})
            elif kind == "result":
                seen.result = event
            elif kind == "error":
                seen.error = str(event.get("message"))
            job_event = _job_event(event)
            if job_event is not None:
                events.append(job_event)
        cancel = await ctx.awrite(events)
        if exited:
            return seen
        limit = settings.finetune_memory_limit_mb
        if limit and (used := await asyncio.to_thread(_memory_mb, process.pid)) > limit:
            seen.over_memory_mb = used
            await _stop(process, grace=0.0)
            return seen
        if cancel:
            seen.cancelled = True
            await _stop(process, settings.finetune_cancel_grace_seconds)
            return seen


def failure(
    returncode: int | None, seen: Supervised, stderr_tail: str, limit_mb: int | None
) -> tuple[str, str]:
    """(error code, message) of a trainer that did not succeed: out_of_memory when the guard stopped it, the
    system killed it (SIGKILL from elsewhere) or it said it ran out; trainer_failed otherwise."""
    if seen.over_memory_mb is not None:
        return (
            "out_of_memory",
            f"the trainer used {seen.over_memory_mb:.0f} MB, over the limit of {limit_mb} MB "
            "(SPROUT_FINETUNE_MEMORY_LIMIT_MB); it was stopped",
        )
    reason = seen.error or (stderr_tail.strip().splitlines() or ["no output"])[-1]
    said = f"{seen.error or ''} {stderr_tail}".lower()
    if returncode == -signal.SIGKILL:
        return "out_of_memory", "the trainer was killed (SIGKILL: most likely the system ran out of memory)"
    if any(
        words in said
        for words in ("memoryerror", "out of memory", "can't allocate memory", "cannot allocate memory")
    ):
        return "out_of_memory", f"the trainer ran out of memory: {reason}"
    return "trainer_failed", f"the trainer exited with code {returncode}: {reason}"


async def _start(workdir: Path, config_path: Path) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # The trainer ends itself once this process is gone (a SIGKILLed worker cannot stop its group).
        "SPROUT_TRAINER_PARENT_PID": str(os.getpid()),
    }
    with (workdir / "trainer.log").open("ab") as log_file:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.finetune.trainer",
            str(config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
            cwd=str(workdir),
            start_new_session=True,  # its own process group: stopping it stops whatever it started
        )


async def train_local(ctx: FinetuneContext, job: FineTuneJob, model: FinetuneModelSettings) -> None:
    settings = ctx.settings
    workdir = work_dir(ctx, job)
    await ctx.awrite([{"message": "Fine-tuning job started"}])
    base = await ctx.while_leased(asyncio.to_thread(base_model_path, job.model, model, settings))
    train, valid, examples = await ctx.while_leased(asyncio.to_thread(_write_inputs, ctx, job, workdir))
    hp = resolve_hyperparameters(job.hyperparameters, examples, model.learning_rate)
    await ctx.awrite(
        hyperparameters={k: hp[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}
    )
    paths = {
        "base_model": str(base),
        "train_file": str(train),
        "validation_file": str(valid) if valid else None,
        "output_dir": str(workdir),
    }
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(_trainer_config(ctx, job, model, paths, hp), indent=2))
    events_path = workdir / "events.jsonl"
    tail = EventTail(events_path)
    if events_path.exists():  # a resumed job: what the earlier run reported is stored already
        tail.offset = events_path.stat().st_size
    process = await _start(workdir, config_path)
    started = f"Trainer started (pid {process.pid}): {examples} examples, {hp['n_epochs']} epoch(s), batch {hp['batch_size']}"
    try:
        await ctx.awrite([{"message": started}])
        seen = await _supervise(ctx, process, tail)
    except BaseException:  # a lost lease, a stopping worker, a database error: the trainer stops too
        if process.returncode is None:
            await asyncio.shield(_stop(process, settings.finetune_cancel_grace_seconds))
        raise
    if seen.cancelled:
        await ctx.afinish(
            JobStatus.cancelled,
            [{"message": "Fine-tuning job cancelled; the trainer was stopped"}],
            message="cancelled",
        )
        return
    if process.returncode != 0 or seen.result is None:
        log_path = workdir / "trainer.log"
        stderr_tail = (
            log_path.read_bytes()[-STDERR_TAIL:].decode("utf-8", "replace") if log_path.exists() else ""
        )
        code, message = failure(process.returncode, seen, stderr_tail, settings.finetune_memory_limit_mb)
        await asyncio.to_thread(ctx.fail, code, message[:2000])
        return
    await _succeed(ctx, job, model, workdir, seen)


async def _succeed(
    ctx: FinetuneContext, job: FineTuneJob, model: FinetuneModelSettings, workdir: Path, seen: Supervised
) -> None:
    result = seen.result
    assert result is not None
    await ctx.awrite([{"message": "Training finished; storing the adapter and the merged model"}])
    result_files = await ctx.while_leased(
        asyncio.to_thread(_store_results, ctx, job, workdir, result, seen.metrics)
    )
    for stale in workdir.glob("checkpoint-*"):  # optimizer states: the stored results replace them
        shutil.rmtree(stale, ignore_errors=True)
    tuned = tuned_model_name(job)
    evaluation = {
        **seen.evaluation,
        **{key: result.get(key) for key in ("masking", "train_runtime_s", "tokens_per_s", "peak_rss_mb")},
    }
    await ctx.afinish(
        JobStatus.succeeded,
        [
            {"message": f"New fine-tuned model created: {tuned}"},
            {"message": "The job has successfully completed"},
        ],
        fine_tuned_model=tuned,
        trained_tokens=int(result.get("trained_tokens") or 0),
        result_files=result_files,
        evaluation=evaluation,
        message=f"trained {result.get('trained_tokens')} tokens in {float(result.get('train_runtime_s') or 0):.0f} s",
    )
    if model.serve_backend:
        try:
            await register_adapter(
                ctx.sessions,
                ctx.settings.backends,
                model.serve_backend,
                job.id,
                tuned,
                workdir / result["adapter_dir"],
            )
        except Exception as exc:  # noqa: BLE001 (the job succeeded; loading it is a step of its own, retried later)
            log.warning("could not load %s on %s: %s", tuned, model.serve_backend, exc)
            with transaction(ctx.sessions) as session:
                add_event(
                    session,
                    job.id,
                    f"Could not load the adapter on backend {model.serve_backend}: {exc}",
                    level="warn",
                )
