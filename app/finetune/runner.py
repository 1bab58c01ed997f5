"""Run claimed fine-tuning jobs: the `validating_files` step, then training by the job's trainer.

A job is claimed twice. First its files are checked (a bad file fails the job with a code, the line and
`param`); a job that passes goes back to the queue as `queued`, so a long training elsewhere never holds up the
check. Then a training slot claims it and hands it to its trainer: the local one (TRL + PEFT in a process of
its own, app/finetune/local.py) or a remote OpenAI-compatible service (app/finetune/remote.py). Every write is
fenced by the claim, as for generation jobs (app/jobs/queue.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import openai
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import DEFAULT_MODEL_NAME, FinetuneModelSettings, Settings
from app.core.db import transaction, utc_now
from app.finetune.errors import FileValidationError
from app.finetune.files import iter_lines
from app.finetune.models import FineTuneJob
from app.finetune.service import add_event
from app.finetune.validation import TokenCounter, validate_examples
from app.jobs.models import JobStatus
from app.jobs.queue import Claim, LeaseLostError, fenced_update, finish, release, retry_later

log = logging.getLogger(__name__)
T = TypeVar("T")


class FinetuneContext:
    """What a trainer may do with its claim: read the job, write events, renew the lease, finish."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings, claim: Claim) -> None:
        self.sessions = sessions
        self.settings = settings
        self.claim = claim

    def job(self) -> FineTuneJob:
        with self.sessions() as session:
            job = session.get(FineTuneJob, self.claim.job_id)
            assert job is not None
            session.expunge(job)
            return job

    def write(self, events: Sequence[dict[str, Any]] = (), **values: Any) -> bool:
        """Renew the lease, store `values` and events in one transaction; returns whether a cancel was asked."""
        lease = utc_now(self.settings.job_lease_seconds)
        with transaction(self.sessions) as session:
            cancel = fenced_update(session, FineTuneJob, self.claim, lease_until=lease, **values)
            for event in events:  # after the fence: a worker that lost the job writes nothing
                add_event(session, self.claim.job_id, **event)
            return cancel

    async def awrite(self, events: Sequence[dict[str, Any]] = (), **values: Any) -> bool:
        return await asyncio.to_thread(self.write, events, **values)

    def finish(self, status: JobStatus, events: Sequence[dict[str, Any]] = (), **values: Any) -> None:
        with transaction(self.sessions) as session:
            for event in events:
                add_event(session, self.claim.job_id, **event)
            finish(session, FineTuneJob, self.claim, status, **values)

    async def afinish(self, status: JobStatus, events: Sequence[dict[str, Any]] = (), **values: Any) -> None:
        await asyncio.to_thread(self.finish, status, events, **values)

    def fail(self, code: str, message: str, param: str | None = None) -> None:
        self.finish(
            JobStatus.failed,
            [{"message": f"Fine-tuning job failed: {message}", "level": "error"}],
            error=message,
            error_code=code,
            error_param=param,
        )

    async def while_leased(self, work: Awaitable[T]) -> T:
        """Await `work`, renewing the lease meanwhile (LeaseLostError stops it; a cancel is noticed by the
        caller through `write`)."""
        task = asyncio.ensure_future(work)
        interval = max(0.5, self.settings.job_lease_seconds / 4)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=interval)
                if done:
                    return task.result()
                await self.awrite()
        finally:
            if not task.done():
                task.cancel()


def base_model_path(name: str, model: FinetuneModelSettings, settings: Settings) -> Path | str:
    """Where the local trainer loads the base model: the configured path, or the embedded model's checkpoint
    (`sprout models prepare`), made on first use."""
    if model.path:
        return Path(model.path) if Path(model.path).exists() else model.path
    target = settings.models_dir / (name if name == DEFAULT_MODEL_NAME else DEFAULT_MODEL_NAME)
    from app.llm.checkpoint import prepare_hf_checkpoint

    return prepare_hf_checkpoint(target).resolve()


def chat_token_counter(path: Path | str) -> tuple[TokenCounter, int]:
    """Tokens of an example as the trainer will see it (the base model's chat template, tokenized), and the
    model's context window."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    context = int(getattr(AutoConfig.from_pretrained(str(path)), "max_position_embeddings", 0) or 0)

    def count(messages: list[dict[str, Any]]) -> int:
        ids = tokenizer.apply_chat_template(messages, tokenize=True)
        if hasattr(ids, "keys"):  # transformers 5 may answer with a BatchEncoding
            ids = ids["input_ids"]
        return len(ids)

    return count, context


class FinetuneRunner:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings, registry: Any = None) -> None:
        self._sessions = sessions
        self._settings = settings
        self._registry = registry

    async def validate(self, claim: Claim) -> None:
        """The validating_files step: pass -> queued again (files_validated), fail -> failed with the line."""
        ctx = FinetuneContext(self._sessions, self._settings, claim)
        try:
            job = await asyncio.to_thread(ctx.job)
            model = self._settings.finetune_models.get(job.model)
            if model is None:
                await asyncio.to_thread(
                    ctx.fail, "model_not_available", f"model {job.model!r} is no longer configured", "model"
                )
                return
            try:
                examples = await ctx.while_leased(asyncio.to_thread(self._check_files, job, model))
            except FileValidationError as exc:
                await asyncio.to_thread(ctx.fail, exc.code, exc.message, exc.param)
                return
            await asyncio.to_thread(self._queue_validated, ctx, examples)
        except ImportError as exc:
            await asyncio.to_thread(
                ctx.fail,
                "trainer_unavailable",
                f"{exc}: install the training extra with: pip install 'sprout[train]'",
            )
        except LeaseLostError:
            log.warning("fine-tuning job %s: lease lost while validating files", claim.job_id)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self._release, claim))
            raise
        except Exception as exc:  # noqa: BLE001 (a broken base model, an unreadable tokenizer: the job says why)
            log.exception("fine-tuning job %s: validation failed", claim.job_id)
            await asyncio.to_thread(ctx.fail, "validation_error", f"{type(exc).__name__}: {exc}")

    def _check_files(self, job: FineTuneJob, model: FinetuneModelSettings) -> int:
        counter, context = None, model.context_length or 0
        if model.trainer == "local":  # a remote service checks lengths with its own tokenizer
            counter, model_context = chat_token_counter(base_model_path(job.model, model, self._settings))
            context = model.context_length or model_context or model.max_length
        examples = validate_examples(
            iter_lines(self._sessions, job.training_file_id),
            param="training_file",
            min_examples=self._settings.finetune_min_examples,
            context_length=context,
            count_tokens=counter,
        )
        if job.validation_file_id is not None:
            validate_examples(
                iter_lines(self._sessions, job.validation_file_id),
                param="validation_file",
                min_examples=1,
                context_length=context,
                count_tokens=counter,
            )
        return examples

    def _queue_validated(self, ctx: FinetuneContext, examples: int) -> None:
        with transaction(self._sessions) as session:
            fenced_update(
                session,
                FineTuneJob,
                ctx.claim,
                files_validated=True,
                status=JobStatus.queued,
                worker_id=None,
                lease_until=None,
                message=f"{examples} training examples",
            )
            add_event(
                session,
                ctx.claim.job_id,
                f"Files validated ({examples} training examples), moving job to queued state",
            )

    def _release(self, claim: Claim) -> None:
        try:
            with transaction(self._sessions) as session:
                release(session, FineTuneJob, claim)
        except LeaseLostError:
            pass

    async def train(self, claim: Claim) -> None:
        """Hand the job to its trainer; a stopping worker gives the job back (it resumes from its checkpoint)."""
        ctx = FinetuneContext(self._sessions, self._settings, claim)
        try:
            job = await asyncio.to_thread(ctx.job)
            trainer = self._trainer(job)
            if trainer is None:
                await asyncio.to_thread(
                    ctx.fail, "model_not_available", f"model {job.model!r} is no longer configured", "model"
                )
                return
            await trainer(ctx, job)
        except LeaseLostError:
            log.warning("fine-tuning job %s: lease lost; its trainer was stopped", claim.job_id)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self._release, claim))
            raise
        except (openai.APIConnectionError, OperationalError, InterfaceError) as exc:
            # Transient: the remote trainer or the database went away. Back to the queue behind a backoff; the
            # next attempt resumes (from its checkpoint, or its remote job).
            log.warning("fine-tuning job %s: %s; retrying later", claim.job_id, exc)
            try:
                await asyncio.to_thread(self._retry_later, claim, f"{type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001 (the database may still be away: the lease expires and requeues it)
                log.warning("fine-tuning job %s: could not requeue it", claim.job_id, exc_info=True)
        except Exception as exc:  # noqa: BLE001 (the job must end with the cause, never stay running)
            log.exception("fine-tuning job %s failed", claim.job_id)
            try:
                await asyncio.to_thread(ctx.fail, "internal_error", f"{type(exc).__name__}: {exc}")
            except LeaseLostError:
                pass

    def _retry_later(self, claim: Claim, reason: str) -> None:
        settings = self._settings
        with transaction(self._sessions) as session:
            retry_later(
                session,
                FineTuneJob,
                claim,
                reason=reason,
                max_attempts=settings.job_max_attempts,
                initial=settings.job_retry_initial_seconds,
                maximum=settings.job_retry_max_seconds,
                error_code="transient_failure",
            )

    def _trainer(self, job: FineTuneJob) -> Callable[[FinetuneContext, FineTuneJob], Awaitable[None]] | None:
        model = self._settings.finetune_models.get(job.model)
        if model is None:
            return None
        if model.trainer == "remote":
            from app.finetune.remote import train_remote

            return lambda ctx, job: train_remote(ctx, job, model)
        from app.finetune.local import train_local

        return lambda ctx, job: train_local(ctx, job, model)
