"""Crash safety of fine-tuning: a `sprout worker` SIGKILLed while its trainer is training. The trainer (a process
group of its own, which the dead worker can no longer stop) notices that its supervisor is gone and ends itself
at once; another worker claims the job once the lease expires, and the new trainer resumes from the last
checkpoint (the same configuration and data: the same fingerprint) and the job succeeds with every step and
checkpoint reported once. The real embedded model (SmolLM2-135M), 12 examples of 128 tokens at most, 4 steps.
On SQLite (a file shared by the processes) and on PostgreSQL."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.core.config import DEFAULT_MODEL_NAME, FinetuneModelSettings, Settings
from app.core.db import create_db_engine, make_session_factory, run_migrations, transaction
from app.finetune.files import store_file
from app.finetune.models import FineTuneCheckpoint, FineTuneEvent, FineTuneJob
from app.finetune.schemas import JobCreate
from app.finetune.service import create_job
from app.jobs.models import JobStatus
from tests.integration.finetune.test_openai_sdk import PAIRS  # 12 examples: the file check's minimum is 10
from tests.support.workers import WorkerFleet, alive, wait_until, worker_env

pytestmark = [pytest.mark.drill, pytest.mark.slow, pytest.mark.model]

EPOCHS, BATCH = 2, 6  # 2 steps an epoch, a checkpoint at each epoch's end: steps 2 and 4
STEPS = EPOCHS * len(PAIRS) // BATCH
LEASE_SECONDS = 5
_PID = re.compile(r"^Trainer started \(pid (\d+)\)")


def chat_jsonl(pairs: list[tuple[str, str]]) -> bytes:
    lines = (
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
            ensure_ascii=False,
        )
        for q, a in pairs
    )
    return ("\n".join(lines) + "\n").encode()


def events_of(sessions, job_id: int) -> list[FineTuneEvent]:  # noqa: ANN001
    with sessions() as session:
        return list(
            session.scalars(
                select(FineTuneEvent).where(FineTuneEvent.job_id == job_id).order_by(FineTuneEvent.id)
            )
        )


def trainer_pids(events: list[FineTuneEvent]) -> list[int]:
    return [int(m.group(1)) for e in events if (m := _PID.match(e.message))]


def steps(events: list[FineTuneEvent]) -> list[int]:
    return [int(e.data["step"]) for e in events if e.type == "metrics" and e.data]


def checkpoint_steps(sessions, job_id: int) -> list[int]:  # noqa: ANN001
    with sessions() as session:
        query = select(FineTuneCheckpoint.step_number).where(FineTuneCheckpoint.job_id == job_id)
        return sorted(session.scalars(query))


def test_a_worker_killed_mid_training_resumes_from_its_checkpoint(
    database_url: str, vllm_checkpoint: Path, tmp_path: Path
) -> None:
    run_migrations(database_url)
    engine = create_db_engine(database_url)
    sessions = make_session_factory(engine)
    models = {
        DEFAULT_MODEL_NAME: FinetuneModelSettings(
            path=str(vllm_checkpoint), max_length=128, context_length=256
        )
    }
    settings = Settings(_env_file=None, database_url=database_url, finetune_models=models)  # type: ignore[call-arg]
    with transaction(sessions) as session:
        training = store_file(
            session,
            [chat_jsonl(PAIRS)],
            filename="train.jsonl",
            purpose="fine-tune",
            created_by="drill",
            check_jsonl=True,
        )
        body = JobCreate(
            model=DEFAULT_MODEL_NAME,
            training_file=training.public_id,
            hyperparameters={"n_epochs": EPOCHS, "batch_size": BATCH},
            seed=7,
        )
        job_id = create_job(session, body, settings, "drill").id
    env = worker_env(
        database_url,
        finetune_models=models,
        # One machine: the second worker finds the first one's checkpoints in the same directory.
        finetune_dir=tmp_path / "finetune",
        finetune_threads=1,
        job_lease_seconds=LEASE_SECONDS,
        worker_poll_seconds=0.2,
    )

    def job() -> FineTuneJob:
        with sessions() as session:
            found = session.get(FineTuneJob, job_id)
            assert found is not None
            session.expunge(found)
            return found

    with WorkerFleet(tmp_path / "workers", env) as fleet:
        first = fleet.start(concurrency=1, trainings=1)

        # Live training: a checkpoint stored, the step after it reported, the trainer still at work.
        def training_past_a_checkpoint() -> bool:
            state = job()
            assert state.status in (JobStatus.queued, JobStatus.running), (state.status, state.error)
            checkpoints = checkpoint_steps(sessions, job_id)
            done = steps(events_of(sessions, job_id))
            return bool(checkpoints) and bool(done) and max(done) > max(checkpoints) and max(done) < STEPS

        wait_until(
            training_past_a_checkpoint,
            timeout=240,
            poll=0.25,
            what="the trainer to report a step after its first checkpoint",
            diagnostics=fleet.diagnostics,
        )
        before = events_of(sessions, job_id)
        [trainer] = trainer_pids(before)
        assert alive(trainer), "the trainer had already stopped"
        steps_before = steps(before)
        checkpoints_before = checkpoint_steps(sessions, job_id)
        children = first.kill()
        killed_at = time.monotonic()
        assert trainer in children

        # The orphaned trainer notices that its supervisor is gone and stops: nothing trains on unsupervised.
        wait_until(
            lambda: not alive(trainer),
            timeout=5,
            poll=0.1,
            what=f"the orphaned trainer {trainer} to stop by itself",
        )
        trainer_gone = time.monotonic() - killed_at
        wait_until(
            lambda: not any(alive(pid) for pid in children),
            timeout=10,
            what=f"every child of the killed worker ({children}) to stop",
        )
        held = job()
        assert held.status == JobStatus.running and held.attempt == 2  # file check, then this training

        fleet.start(concurrency=1, trainings=1)
        wait_until(
            lambda: job().status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled),
            timeout=300,
            poll=0.5,
            what="the job to end on the second worker",
            diagnostics=fleet.diagnostics,
        )
        took = time.monotonic() - killed_at
        done = job()
        after = events_of(sessions, job_id)
        checkpoints = checkpoint_steps(sessions, job_id)
    engine.dispose()

    assert done.status == JobStatus.succeeded, (done.error_code, done.error, fleet.diagnostics())
    assert done.attempt == 3 and done.fine_tuned_model and len(done.result_files) >= 2
    pids = trainer_pids(after)
    assert len(pids) == 2 and pids[0] == trainer and not alive(pids[1])
    resumed = [e.message for e in after if e.message.startswith("resuming from checkpoint-")]
    assert len(resumed) == 1, [e.message for e in after]
    resumed_at = int(resumed[0].split("checkpoint-")[1].split()[0])
    assert resumed_at >= max(checkpoints_before) and resumed_at in checkpoints
    # The steps after that checkpoint are trained again (the kill lost them), then each step once to the end.
    restarted = next(
        e.id for e in after if _PID.match(e.message) and int(_PID.match(e.message).group(1)) == pids[1]
    )
    second_run = steps([e for e in after if e.id > restarted])
    assert second_run == list(range(resumed_at + 1, STEPS + 1)), (resumed_at, second_run)
    # A checkpoint at each epoch's end (2 and 4), each stored once.
    assert checkpoints == [STEPS // EPOCHS * (e + 1) for e in range(EPOCHS)], checkpoints
    print(
        f"\n[{database_url.split(':')[0]}] killed after step {max(steps_before)} (checkpoints {checkpoints_before}); "
        f"orphaned trainer gone {trainer_gone:.1f} s later; resumed from checkpoint-{resumed_at}; "
        f"succeeded {took:.0f} s after the kill"
    )
