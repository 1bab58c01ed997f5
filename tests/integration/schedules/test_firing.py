"""fire_due on SQLite and on a real PostgreSQL server, with an injected clock: one run per due fire time,
coalescing after downtime (and one run each without it), pause and resume, stopping at a target size or after
N runs, skipping while the previous job lives, errors recorded rather than raised, and many firers at once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.core.db import transaction
from app.core.errors import ConflictError
from app.generation.models import GenerationJob, Item, ItemStatus
from app.jobs.models import JobStatus
from app.jobs.queue import claim_next
from app.llm.registry import BackendRegistry
from app.schedules import service
from app.schedules.models import Schedule, ScheduleRun
from app.schedules.schemas import ScheduleCreate, ScheduleUpdate
from tests.integration.schedules.conftest import (
    T0,
    end_job,
    jobs_of_dataset,
    new_dataset,
    runs_of,
    schedule_row,
)
from tests.support.items import add_items


def minutes(n: float):  # noqa: ANN201
    return T0 + timedelta(minutes=n)


@pytest.fixture
def make(sessions, settings, registry, dataset_id):  # noqa: ANN001, ANN201
    """Store a schedule (every 5 minutes from T0 unless told otherwise); its id."""

    def made(**fields) -> int:  # noqa: ANN003
        body = {"name": "every-five", "dataset_id": dataset_id, "cron": "*/5 * * * *", **fields}
        with transaction(sessions) as session:
            return service.create_schedule(
                session, ScheduleCreate(**body), settings, registry, "tester", now=T0
            ).id

    return made


@pytest.fixture
def fire(sessions, settings, registry):  # noqa: ANN001, ANN201
    def fired(at, worker: str = "worker-a") -> list[int]:  # noqa: ANN001
        return service.fire_due(sessions, settings, registry, worker, now=at)

    return fired


def test_each_due_fire_time_fires_once_and_queues_a_job_as_the_schedule_says(
    sessions, make, fire, dataset_id
) -> None:
    schedule_id = make(priority=7, params={"count": 3, "language": "zh"}, backend="remote")
    assert schedule_row(sessions, schedule_id).next_fire_at == minutes(5)
    assert fire(minutes(4)) == []  # not due yet
    (job_id,) = fire(minutes(5))
    assert fire(minutes(5)) == [] and fire(minutes(7), "worker-b") == []  # the same fire time, again
    (run,) = runs_of(sessions, schedule_id)
    assert (run.fire_time, run.outcome, run.coalesced, run.job_id, run.fired_by) == (
        minutes(5),
        "queued",
        1,
        job_id,
        "worker-a",
    )
    (job,) = jobs_of_dataset(sessions, dataset_id)
    assert (job.id, job.status, job.priority, job.backend, job.requested) == (
        job_id,
        JobStatus.queued,
        7,
        "remote",
        3,
    )
    assert job.params["language"] == "zh"
    schedule = schedule_row(sessions, schedule_id)
    assert (schedule.runs, schedule.missed, schedule.last_fire_at, schedule.next_fire_at) == (
        1,
        0,
        minutes(5),
        minutes(10),
    )
    end_job(sessions, job_id)
    # Even a schedule whose next fire time went back to one already fired cannot fire it twice: the run's
    # unique key (schedule, fire time) refuses it, and the job queued with it is rolled back.
    with transaction(sessions) as session:
        session.execute(update(Schedule).where(Schedule.id == schedule_id).values(next_fire_at=minutes(5)))
    assert fire(minutes(6)) == []
    assert len(runs_of(sessions, schedule_id)) == 1 and len(jobs_of_dataset(sessions, dataset_id)) == 1
    assert schedule_row(sessions, schedule_id).next_fire_at == minutes(10)
    (second,) = fire(minutes(10))
    assert second != job_id
    assert [r.fire_time for r in runs_of(sessions, schedule_id)] == [minutes(5), minutes(10)]


def test_firings_missed_while_nothing_ran_coalesce_into_one_run(sessions, make, fire) -> None:
    schedule_id = make()
    (first,) = fire(minutes(5))
    end_job(sessions, first)
    # Down from 00:06 to 00:31: 00:10, 00:15, 00:20, 00:25 and 00:30 were missed.
    (second,) = fire(minutes(31))
    runs = runs_of(sessions, schedule_id)
    assert [(r.fire_time, r.coalesced, r.outcome, r.job_id) for r in runs] == [
        (minutes(5), 1, "queued", first),
        (minutes(30), 5, "queued", second),
    ]
    schedule = schedule_row(sessions, schedule_id)
    assert (schedule.runs, schedule.missed, schedule.next_fire_at) == (2, 4, minutes(35))


def test_without_coalescing_every_missed_firing_is_a_run_and_jobs_do_not_pile_up(
    sessions, make, fire, dataset_id
) -> None:
    schedule_id = make(coalesce=False)
    (first,) = fire(minutes(5))
    end_job(sessions, first)
    queued = fire(minutes(31))
    assert len(queued) == 1  # one live job at a time
    runs = runs_of(sessions, schedule_id)
    assert [r.fire_time for r in runs] == [minutes(m) for m in (5, 10, 15, 20, 25, 30)]
    assert all(r.coalesced == 1 for r in runs)
    assert [r.outcome for r in runs[1:]] == ["queued", "skipped", "skipped", "skipped", "skipped"]
    assert all(
        f"generation job {queued[0]} from an earlier run is still queued" in r.message for r in runs[2:]
    )
    assert len(jobs_of_dataset(sessions, dataset_id)) == 2
    schedule = schedule_row(sessions, schedule_id)
    assert (schedule.runs, schedule.missed, schedule.next_fire_at) == (2, 0, minutes(35))


def test_a_firing_while_the_previous_job_runs_is_skipped_and_says_why(sessions, make, fire) -> None:
    schedule_id = make()
    (job_id,) = fire(minutes(5))
    with transaction(sessions) as session:
        assert claim_next(session, GenerationJob, "generation-worker", 60, job_id=job_id) is not None
    assert fire(minutes(10)) == []
    skipped = runs_of(sessions, schedule_id)[-1]
    assert (skipped.fire_time, skipped.outcome, skipped.job_id) == (minutes(10), "skipped", None)
    assert skipped.message == f"generation job {job_id} from an earlier run is still running"
    assert schedule_row(sessions, schedule_id).runs == 1


def test_nothing_fires_while_paused_and_resuming_does_not_run_what_was_missed(sessions, make, fire) -> None:
    schedule_id = make()
    with transaction(sessions) as session:
        paused = service.pause_schedule(session, schedule_id)
        assert (paused.enabled, paused.next_fire_at) == (False, None)
    assert fire(minutes(20)) == []
    with transaction(sessions) as session:
        resumed = service.resume_schedule(session, schedule_id, now=minutes(22))
        assert resumed.next_fire_at == minutes(25)
    assert fire(minutes(24)) == []
    (job_id,) = fire(minutes(26))
    (run,) = runs_of(sessions, schedule_id)  # 00:05 ... 00:20 were never run
    assert (run.fire_time, run.coalesced, run.job_id) == (minutes(25), 1, job_id)
    assert schedule_row(sessions, schedule_id).missed == 0


def test_it_stops_by_itself_once_the_dataset_holds_its_target_of_accepted_items(
    sessions, make, fire, dataset_id
) -> None:
    with transaction(sessions) as session:
        add_items(session, dataset_id, 2, ItemStatus.pending)
        add_items(session, dataset_id, 1, ItemStatus.rejected)  # kept by the accept step: counts
        dropped = add_items(session, dataset_id, 5, ItemStatus.pending)
        session.execute(  # dropped by the accept step: does not count
            update(Item)
            .where(Item.id.in_(dropped))
            .values(status=ItemStatus.filtered, filter_reason="too_short")
        )
    schedule_id = make(target_items=5, params={"count": 10})
    (job_id,) = fire(minutes(5))
    (run,) = runs_of(sessions, schedule_id)
    assert run.message == "count lowered to 2: the dataset is 2 accepted items short of its target"
    assert jobs_of_dataset(sessions, dataset_id)[-1].requested == 2
    end_job(sessions, job_id)
    with transaction(sessions) as session:
        add_items(session, dataset_id, 2, ItemStatus.approved)
    assert fire(minutes(10)) == []
    last = runs_of(sessions, schedule_id)[-1]
    assert (last.fire_time, last.outcome) == (minutes(10), "skipped")
    schedule = schedule_row(sessions, schedule_id)
    assert (schedule.enabled, schedule.next_fire_at, schedule.runs) == (False, None, 1)
    assert schedule.ended_reason == "the dataset holds 5 accepted items, reaching the target of 5"
    assert last.message == f"stopped: {schedule.ended_reason}"
    assert fire(minutes(60)) == []


def test_an_approved_target_counts_approved_items_only(sessions, make, fire, dataset_id) -> None:
    with transaction(sessions) as session:
        add_items(session, dataset_id, 6, ItemStatus.pending)
        add_items(session, dataset_id, 1, ItemStatus.approved)
    schedule_id = make(target_items=2, target_status="approved", params={"count": 10})
    (job_id,) = fire(minutes(5))
    assert jobs_of_dataset(sessions, dataset_id)[-1].requested == 10  # approval is people's: not capped
    end_job(sessions, job_id)
    with transaction(sessions) as session:
        add_items(session, dataset_id, 1, ItemStatus.approved)
    assert fire(minutes(10)) == []
    schedule = schedule_row(sessions, schedule_id)
    assert not schedule.enabled and schedule.ended_reason.startswith("the dataset holds 2 approved items")


def test_it_stops_after_max_runs_and_cannot_be_resumed_until_the_limit_is_raised(
    sessions, make, fire, settings, registry
) -> None:
    schedule_id = make(max_runs=2)
    (first,) = fire(minutes(5))
    end_job(sessions, first)
    (second,) = fire(minutes(10))
    schedule = schedule_row(sessions, schedule_id)
    assert (schedule.enabled, schedule.next_fire_at, schedule.runs) == (False, None, 2)
    assert schedule.ended_reason == "ran 2 times (max_runs 2)"
    end_job(sessions, second)
    assert fire(minutes(15)) == []
    with pytest.raises(ConflictError, match="raise max_runs"), transaction(sessions) as session:
        service.resume_schedule(session, schedule_id, now=minutes(16))
    with transaction(sessions) as session:
        changed = service.update_schedule(
            session,
            schedule_id,
            ScheduleUpdate(max_runs=3, enabled=True),
            settings,
            registry,
            now=minutes(16),
        )
        assert (changed.enabled, changed.ended_reason, changed.next_fire_at) == (True, None, minutes(20))
    assert len(fire(minutes(20))) == 1
    assert schedule_row(sessions, schedule_id).ended_reason == "ran 3 times (max_runs 3)"


def test_a_schedule_that_cannot_queue_records_why_and_the_others_still_fire(
    sessions, settings, registry, fire, dataset_id
) -> None:
    empty = new_dataset(sessions, "no-seeds", seeds=False)
    with transaction(sessions) as session:
        ids = [
            service.create_schedule(session, ScheduleCreate(**body), settings, registry, "t", now=T0).id
            for body in (
                {"name": "no-seeds", "dataset_id": empty, "cron": "*/5 * * * *"},
                {
                    "name": "backend-gone",
                    "dataset_id": dataset_id,
                    "cron": "*/5 * * * *",
                    "backend": "remote",
                },
                {"name": "fine", "dataset_id": dataset_id, "cron": "*/5 * * * *"},
            )
        ]
    # The service restarted without the "remote" backend in its settings.
    shrunk = settings.model_copy(update={"backends": {"local": settings.backends["local"]}})
    queued = service.fire_due(sessions, shrunk, BackendRegistry.from_settings(shrunk), "w", now=minutes(5))
    assert len(queued) == 1
    no_seeds, gone, fine = (runs_of(sessions, i) for i in ids)
    assert no_seeds[0].outcome == "skipped" and "has no seed tasks yet" in no_seeds[0].message
    assert gone[0].outcome == "skipped" and "unknown backend 'remote'" in gone[0].message
    assert fine[0].outcome == "queued" and fine[0].job_id == queued[0]
    # Skipped runs do not count as runs; the schedules stay on their cron.
    assert [schedule_row(sessions, i).runs for i in ids] == [0, 0, 1]
    assert all(schedule_row(sessions, i).next_fire_at == minutes(10) for i in ids)


def test_the_database_clock_decides_what_is_due(sessions, make, settings, registry) -> None:
    schedule_id = make(cron="0 0 1 1 *")  # once a year: not due by the database's clock now
    with transaction(sessions) as session:
        now = service.database_now(session)
        # Created without a clock: its first fire time is after the database's now.
        created = service.create_schedule(
            session,
            ScheduleCreate(
                name="db-clock", dataset_id=schedule_row(sessions, schedule_id).dataset_id, cron="@yearly"
            ),
            settings,
            registry,
            "t",
        )
        assert now < created.next_fire_at <= now + timedelta(days=366)
        session.execute(
            update(Schedule).where(Schedule.id == schedule_id).values(next_fire_at=now - timedelta(minutes=1))
        )
    queued = service.fire_due(sessions, settings, registry, "w")  # no injected clock
    assert len(queued) == 1
    (run,) = runs_of(sessions, schedule_id)
    assert run.fire_time == now - timedelta(minutes=1)
    assert runs_of(sessions, created.id) == []


def test_many_firers_at_once_fire_each_fire_time_once(sessions, settings, registry, dataset_id) -> None:
    """Six threads call fire_due together (a barrier), over ten fire times of three schedules."""
    with transaction(sessions) as session:
        ids = [
            service.create_schedule(
                session,
                ScheduleCreate(name=f"s{i}", dataset_id=dataset_id, cron="* * * * *", coalesce=False),
                settings,
                registry,
                "t",
                now=T0,
            ).id
            for i in range(3)
        ]
    firers = 6
    results: list[list[int]] = []
    errors: list[BaseException] = []
    for minute in range(1, 11):
        barrier = threading.Barrier(firers)

        def one(worker: str, at=T0 + timedelta(minutes=minute, seconds=1), barrier=barrier) -> None:  # noqa: ANN001
            try:
                barrier.wait(timeout=30)
                results.append(service.fire_due(sessions, settings, registry, worker, now=at))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(f"w{i}",)) for i in range(firers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        # The jobs end before the next minute, so each firing may queue one.
        with sessions() as session:
            live = session.scalars(
                select(GenerationJob.id).where(
                    GenerationJob.dataset_id == dataset_id, GenerationJob.status == JobStatus.queued
                )
            ).all()
        for job_id in live:
            end_job(sessions, job_id)
    assert not errors, errors
    queued = [job for batch in results for job in batch]
    assert len(queued) == len(set(queued)) == 30  # 3 schedules x 10 minutes, each exactly once
    with sessions() as session:
        runs = session.scalars(select(ScheduleRun).where(ScheduleRun.schedule_id.in_(ids))).all()
    assert len(runs) == 30 and all(r.outcome == "queued" for r in runs)
    for schedule_id in ids:
        fired = sorted(r.fire_time for r in runs if r.schedule_id == schedule_id)
        assert fired == [T0 + timedelta(minutes=m) for m in range(1, 11)]
    assert len({r.fired_by for r in runs}) >= 2  # the work really was shared out


def test_a_schedule_that_fails_unexpectedly_is_left_for_the_next_call_and_a_broken_cron_ends_it(
    sessions, settings, registry, dataset_id, monkeypatch
) -> None:
    flaky_dataset = new_dataset(sessions, "flaky")
    with transaction(sessions) as session:
        flaky, broken, fine = (
            service.create_schedule(
                session,
                ScheduleCreate(name=name, dataset_id=dataset, cron="*/5 * * * *", coalesce=False),
                settings,
                registry,
                "t",
                now=T0,
            ).id
            for name, dataset in (("flaky", flaky_dataset), ("broken", dataset_id), ("fine", dataset_id))
        )
        # A cron stored by an older Sprout that this one no longer accepts.
        session.execute(update(Schedule).where(Schedule.id == broken).values(cron="R * * * *"))
    real_queue_job = service.queue_job

    def failing(session, dataset_id, params, settings, registry):  # noqa: ANN001, ANN202
        if dataset_id == flaky_dataset:
            raise RuntimeError("the database went away for a moment")
        return real_queue_job(session, dataset_id, params, settings, registry)

    monkeypatch.setattr(service, "queue_job", failing)
    queued = service.fire_due(sessions, settings, registry, "w", now=minutes(5))  # raises nothing
    assert len(queued) == 1 and runs_of(sessions, fine)[0].job_id == queued[0]
    assert runs_of(sessions, flaky) == []  # its transaction rolled back: nothing half-written
    assert schedule_row(sessions, flaky).next_fire_at == minutes(5)  # still due
    ended = schedule_row(sessions, broken)
    assert (ended.enabled, ended.next_fire_at) == (False, None)
    assert ended.ended_reason.startswith("its cron can no longer be used: cron: 'r': random fields")
    monkeypatch.setattr(service, "queue_job", real_queue_job)
    (retried,) = service.fire_due(sessions, settings, registry, "w", now=minutes(6))
    assert [(r.fire_time, r.job_id) for r in runs_of(sessions, flaky)] == [(minutes(5), retried)]
