"""A tuned model that vanishes from its server mid-job (the server restarted and forgot its adapters) is loaded
again and the job goes on; one that cannot be loaded fails the job with the 404. (The real path, against vLLM,
is in tests/integration/finetune/test_serving_and_remote.py; this checks the control flow on both databases.)"""

from __future__ import annotations

from typing import Any

import pytest

from app.core.db import transaction
from app.finetune.models import FineTuneJob, LoraAdapter, StoredFile
from app.generation.pipeline import runner as runner_module
from app.jobs.models import JobStatus
from app.llm.base import LLMFatalError
from tests.integration.generation.test_pipeline import (
    ScriptedBackend,
    assert_consistent,
    distinct_tasks,
    make,
    run,
    setup_job,
    stored,
)

TUNED = "ft:SmolLM2-135M-Instruct:sprout:t:ftjob-1"


def register_adapter(sessions) -> None:  # noqa: ANN001
    with transaction(sessions) as session:
        file = StoredFile(
            public_id="file-a", filename="t.jsonl", purpose="fine-tune", bytes=1, sha256="0" * 64,
            records=10, created_by="test",
        )  # fmt: skip
        session.add(file)
        session.flush()
        job = FineTuneJob(
            public_id="ftjob-1", model="SmolLM2-135M-Instruct", trainer="local", training_file_id=file.id,
            hyperparameters={}, seed=1, created_by="test", status=JobStatus.succeeded,
        )  # fmt: skip
        session.add(job)
        session.flush()
        session.add(LoraAdapter(backend="local", name=TUNED, job_id=job.id, path="/nowhere"))


@pytest.mark.parametrize("loadable", [True, False])
def test_a_tuned_model_gone_mid_job_is_loaded_again(
    sessions, database_url: str, monkeypatch, loadable: bool
) -> None:  # noqa: ANN001
    state = {"served": True, "loads": 0, "calls": 0}
    tasks = distinct_tasks()

    def script(prompt: str) -> Any:
        state["calls"] += 1
        if state["calls"] == 3:
            state["served"] = False  # the server restarted after two replies
        if not state["served"]:
            return LLMFatalError(f"LLM server http://gpu/v1: not found (HTTP 404; unknown model): {TUNED}")
        return tasks(prompt)

    async def ensure_loaded(_sessions, _backends, backend: str, name: str) -> bool:  # noqa: ANN001
        assert (backend, name) == ("local", TUNED)
        if state["served"]:
            return False  # the job's start: still there
        if not loadable:
            raise runner_module.AdapterLoadError("the server refused to load it")
        state["loads"] += 1
        state["served"] = True
        return True

    monkeypatch.setattr(runner_module, "ensure_loaded", ensure_loaded)
    register_adapter(sessions)
    settings, registry = make(database_url, ScriptedBackend(script, max_in_flight=1))
    claim = setup_job(sessions, settings, registry, count=20, model=TUNED)
    status = run(sessions, settings, registry, claim)
    job, items, replies = stored(sessions, claim.job_id)
    if loadable:
        assert status is JobStatus.succeeded and state["loads"] == 1, job.error
        assert job.errors == 0 and job.accepted >= 20 and state["calls"] > 3
        assert {i.model for i in items} == {TUNED}
    else:
        assert status is JobStatus.failed and "HTTP 404" in job.error
    assert_consistent(job, items, replies)
