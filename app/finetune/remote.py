"""The remote trainer: forward a job to a configured OpenAI-compatible fine-tuning service (OpenAI itself, or
another Sprout) and mirror it: upload the files, create the job, then poll its status, events and checkpoints.

The remote job's id is stored as soon as it exists, so a job released by a stopping worker (or requeued after
a crash) picks the same remote job up again instead of starting a second one. Events are mirrored once each
(their remote ids are kept). A cancel here cancels the remote job.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

import openai
from openai import AsyncOpenAI
from sqlalchemy import select

from app.core.config import FinetuneModelSettings
from app.core.db import transaction
from app.finetune.files import iter_content
from app.finetune.models import FineTuneCheckpoint, FineTuneEvent, FineTuneJob, StoredFile
from app.finetune.runner import FinetuneContext
from app.jobs.models import JobStatus

log = logging.getLogger(__name__)
FINAL = {"succeeded", "failed", "cancelled"}


def _client(model: FinetuneModelSettings) -> AsyncOpenAI:
    key = model.api_key.get_secret_value() if model.api_key else "unused"
    return AsyncOpenAI(base_url=model.base_url, api_key=key, max_retries=5, timeout=300)


async def _upload(ctx: FinetuneContext, client: AsyncOpenAI, file_id: int) -> str:
    """Copy a stored file to the remote service (through a temporary file: the SDK streams it from disk)."""

    def spool() -> tuple[Path, str]:
        with ctx.sessions() as session:
            name = session.get(StoredFile, file_id).filename  # type: ignore[union-attr]
        handle = tempfile.NamedTemporaryFile(prefix="sprout-upload-", suffix=".jsonl", delete=False)
        with handle:
            for data in iter_content(ctx.sessions, file_id):
                handle.write(data)
        return Path(handle.name), name

    path, name = await asyncio.to_thread(spool)
    try:
        with path.open("rb") as f:
            uploaded = await client.files.create(file=(name, f), purpose="fine-tune")
    finally:
        path.unlink(missing_ok=True)
    return uploaded.id


async def _create(
    ctx: FinetuneContext, client: AsyncOpenAI, job: FineTuneJob, model: FinetuneModelSettings
) -> str:
    training = await _upload(ctx, client, job.training_file_id)
    validation = await _upload(ctx, client, job.validation_file_id) if job.validation_file_id else None
    remote = await client.fine_tuning.jobs.create(
        model=model.remote_model or job.model,
        training_file=training,
        validation_file=validation,
        method={"type": "supervised", "supervised": {"hyperparameters": job.hyperparameters}},
        suffix=job.suffix,
        seed=job.seed,
        metadata={"sprout_job": job.public_id},
    )
    await ctx.awrite(
        [{"message": f"Forwarded to the remote trainer at {model.base_url} as {remote.id}"}],
        remote_job_id=remote.id,
    )
    return remote.id


def _mirror(ctx: FinetuneContext, events: list[Any], checkpoints: list[Any]) -> None:
    """Store the remote events and checkpoints not stored yet, oldest first."""
    with transaction(ctx.sessions) as session:
        seen = set(
            session.scalars(
                select(FineTuneEvent.remote_id).where(
                    FineTuneEvent.job_id == ctx.claim.job_id, FineTuneEvent.remote_id.is_not(None)
                )
            )
        )
        for event in sorted(events, key=lambda e: (e.created_at, e.id)):
            if event.id in seen:
                continue
            level = event.level if event.level in ("info", "warn", "error") else "info"
            kind = event.type if event.type in ("message", "metrics") else "message"
            data = event.data if isinstance(event.data, dict) else None
            session.add(
                FineTuneEvent(
                    job_id=ctx.claim.job_id,
                    level=level,
                    type=kind,
                    message=event.message,
                    data=data,
                    remote_id=event.id,
                )
            )
        steps = set(
            session.scalars(
                select(FineTuneCheckpoint.step_number).where(FineTuneCheckpoint.job_id == ctx.claim.job_id)
            )
        )
        for checkpoint in checkpoints:
            if checkpoint.step_number not in steps:
                metrics = checkpoint.metrics.model_dump(exclude_none=True) if checkpoint.metrics else {}
                session.add(
                    FineTuneCheckpoint(
                        job_id=ctx.claim.job_id, step_number=checkpoint.step_number, metrics=metrics
                    )
                )


async def train_remote(ctx: FinetuneContext, job: FineTuneJob, model: FinetuneModelSettings) -> None:
    async with _client(model) as client:
        try:
            remote_id = job.remote_job_id or await _create(ctx, client, job, model)
        except openai.APIStatusError as exc:
            await asyncio.to_thread(
                ctx.fail, "remote_rejected", f"the remote trainer refused the job: {exc.message}"
            )
            return
        while True:
            try:
                remote = await client.fine_tuning.jobs.retrieve(remote_id)
                events = (await client.fine_tuning.jobs.list_events(remote_id, limit=100)).data
                checkpoints = (await client.fine_tuning.jobs.checkpoints.list(remote_id, limit=100)).data
            except (openai.APIConnectionError, openai.InternalServerError) as exc:
                # The service is down or restarting (the SDK retried already): keep the lease, look again.
                log.warning("fine-tuning job %s: remote trainer unreachable: %s", job.public_id, exc)
                await ctx.awrite()
                await asyncio.sleep(model.poll_seconds)
                continue
            await asyncio.to_thread(_mirror, ctx, events, checkpoints)
            cancel = await ctx.awrite(hyperparameters=_numbers(remote.hyperparameters) or job.hyperparameters)
            if remote.status in FINAL:
                break
            if cancel:
                try:
                    await client.fine_tuning.jobs.cancel(remote_id)
                except openai.ConflictError:  # it finished meanwhile: mirror how
                    continue
                await ctx.afinish(
                    JobStatus.cancelled, [{"message": "Cancelled here and on the remote trainer"}]
                )
                return
            await asyncio.sleep(model.poll_seconds)
    if remote.status == "succeeded":
        await ctx.afinish(
            JobStatus.succeeded,
            fine_tuned_model=remote.fine_tuned_model,
            trained_tokens=remote.trained_tokens,
            evaluation={
                **(getattr(remote, "model_extra", None) or {}).get("evaluation", {}),
                "remote_result_files": remote.result_files,
            },
        )
    elif remote.status == "cancelled":
        await ctx.afinish(JobStatus.cancelled, [{"message": "The remote trainer cancelled the job"}])
    else:
        error = remote.error
        await asyncio.to_thread(
            ctx.fail,
            (error.code if error and error.code else "remote_failed"),
            f"the remote trainer failed the job: {error.message if error else 'no reason given'}",
            error.param if error else None,
        )


def _numbers(hyperparameters: Any) -> dict[str, Any] | None:
    if hyperparameters is None:
        return None
    values = hyperparameters.model_dump(exclude_none=True)
    return values or None
