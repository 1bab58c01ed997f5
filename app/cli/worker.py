"""`sprout worker`: a worker process of its own. Run several per machine, on any number of machines, against one
PostgreSQL (or, on one machine, the SQLite file `sprout serve` uses).

It claims generation and fine-tuning jobs, fires due schedules and writes its heartbeat like the worker inside
`sprout serve`. SIGTERM or SIGINT: it stops claiming and hands its running jobs back to the queue at once
(another worker resumes them from what they stored; a training resumes from its last checkpoint).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated, Optional

import typer

from app.cli.common import fail
from app.core.config import get_settings
from app.core.db import (
    SchemaBehindError,
    SchemaTooNewError,
    check_schema,
    create_db_engine,
    make_session_factory,
    run_migrations,
)
from app.llm.registry import BackendRegistry
from app.ops.logs import configure_logging


def worker(
    concurrency: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, max=64, help="Generation jobs at once (default: SPROUT_WORKER_CONCURRENCY)."),
    ] = None,
    trainings: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=0, max=64, help="Fine-tuning trainings at once; 0: none on this machine."),
    ] = None,
    metrics_port: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, max=65535, help="Serve this process's Prometheus metrics on this port."),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address the metrics port listens on.")] = "127.0.0.1",
    schedules: Annotated[
        bool, typer.Option("--schedules/--no-schedules", help="Fire due schedules (any number may).")
    ] = True,
    migrate: Annotated[
        bool,
        typer.Option(
            "--migrate/--no-migrate",
            help="Bring an older schema up to date (under a lock) before starting; --no-migrate refuses.",
        ),
    ] = True,
    log_format: Annotated[str, typer.Option(help="json (one object per line) or text.")] = "json",
) -> None:
    """Run a worker process: claim and run queued jobs until SIGTERM."""
    if log_format not in ("json", "text"):
        raise fail("--log-format must be json or text")
    overrides: dict[str, object] = {"schedules_enabled": schedules}
    if concurrency is not None:
        overrides["worker_concurrency"] = concurrency
    if trainings is not None:
        overrides["finetune_concurrency"] = trainings
    settings = get_settings().model_copy(update=overrides)
    configure_logging(log_format)  # type: ignore[arg-type]
    try:
        if migrate:
            run_migrations(settings.database_url)
        else:
            check_schema(settings.database_url, allow_behind=False)
    except (SchemaTooNewError, SchemaBehindError) as exc:
        raise fail(str(exc)) from None
    if metrics_port is not None:
        from prometheus_client import start_http_server

        from app.ops.metrics import process_registry

        start_http_server(metrics_port, addr=metrics_host, registry=process_registry())
    code = asyncio.run(_run(settings))
    raise typer.Exit(code)


async def _run(settings) -> int:  # noqa: ANN001 (Settings)
    from app.jobs.worker import Worker

    engine = create_db_engine(settings.database_url)
    registry = BackendRegistry.from_settings(settings)
    worker = Worker(
        make_session_factory(engine), settings, registry, kind="worker", database_url=settings.database_url
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker.start()
    stopped = asyncio.create_task(worker.stopped.wait())
    signalled = asyncio.create_task(stop.wait())
    await asyncio.wait([stopped, signalled], return_when=asyncio.FIRST_COMPLETED)
    for task in (stopped, signalled):
        task.cancel()
    await worker.stop()  # running jobs go back to the queue
    await registry.aclose()
    engine.dispose()
    return 3 if worker.refusal is not None else 0
