"""A fine-tuning job whose remote trainer (or database) goes away mid-run is not failed: it goes back to the
queue behind a backoff, on SQLite and PostgreSQL, and fails only once it has used its attempts."""

from __future__ import annotations

import asyncio

import httpx2
import openai

from app.core.config import DEFAULT_MODEL_NAME, Settings
from app.core.db import transaction
from app.finetune.models import FineTuneJob, StoredFile
from app.finetune.runner import FinetuneRunner
from app.jobs.models import JobStatus
from app.jobs.queue import claim_next


def validated_job(sessions) -> int:  # noqa: ANN001
    with transaction(sessions) as session:
        file = StoredFile(
            public_id="file-transient", filename="t.jsonl", purpose="fine-tune", bytes=1, sha256="0" * 64,
            records=10, created_by="test",
        )  # fmt: skip
        session.add(file)
        session.flush()
        job = FineTuneJob(
            public_id="ftjob-transient", model=DEFAULT_MODEL_NAME, trainer="local", training_file_id=file.id,
            hyperparameters={}, seed=1, files_validated=True, created_by="test",
        )  # fmt: skip
        session.add(job)
        session.flush()
        return job.id


def train_once(sessions, settings: Settings) -> None:  # noqa: ANN001
    with transaction(sessions) as session:
        claim = claim_next(session, FineTuneJob, "w", 60.0)
    assert claim is not None
    runner = FinetuneRunner(sessions, settings)

    async def unreachable(_ctx, _job) -> None:  # noqa: ANN001
        raise openai.APIConnectionError(request=httpx2.Request("POST", "http://trainer.invalid/v1/files"))

    runner._trainer = lambda _job: unreachable  # type: ignore[method-assign]
    asyncio.run(runner.train(claim))


def test_an_unreachable_trainer_requeues_the_job_until_its_attempts_are_used(sessions) -> None:  # noqa: ANN001
    settings = Settings(_env_file=None, job_max_attempts=2, job_retry_initial_seconds=0)  # type: ignore[call-arg]
    job_id = validated_job(sessions)
    train_once(sessions, settings)
    with sessions() as session:
        job = session.get(FineTuneJob, job_id)
        assert job.status is JobStatus.queued and job.not_before is not None and job.attempt == 1
        assert "APIConnectionError" in job.message and job.error is None
    train_once(sessions, settings)
    with sessions() as session:
        job = session.get(FineTuneJob, job_id)
        assert job.status is JobStatus.failed and job.error_code == "transient_failure"
        assert "after 2 attempt(s)" in job.error
