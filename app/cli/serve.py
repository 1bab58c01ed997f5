"""`sprout serve` and `sprout migrate`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.auth.roles import Role
from app.auth.service import any_user_exists, audit, create_token, create_user
from app.cli.common import console, fail, plain, sessions_for
from app.core.config import Settings, get_settings
from app.core.db import run_migrations, transaction
from app.core.security import generate_password
from app.datasets.seed_formats import parse_seed_file
from app.datasets.service import get_or_create_dataset, import_seeds
from app.generation.models import GenerationJob
from app.generation.params import GenerationParams
from app.generation.service import queue_job
from app.jobs.models import JobStatus
from app.llm.registry import BackendRegistry
from app.ops.logs import configure_logging


def migrate() -> None:
    """Bring the database schema up to date (the service and every command also do it on start)."""
    settings = get_settings()
    run_migrations(settings.database_url)
    console.print(plain("database is up to date: ", settings.database_url))


def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    bootstrap: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option(
            "--bootstrap/--no-bootstrap",
            help="Import the default seeds, queue a first job and, on the first start, create an admin.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Processes serving the port (one per core is a good start); each runs its own job worker.",
        ),
    ] = 1,
    log_format: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="json (one object per line) or text; default: SPROUT_LOG_FORMAT."),
    ] = None,
) -> None:
    """Run the HTTP service (API docs at /docs) with its background worker."""
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    log_format = log_format or settings.log_format
    if log_format not in ("json", "text"):
        raise fail("--log-format must be json or text")
    if workers > 1:  # each process builds the app from the environment: it must log the same way
        os.environ["SPROUT_LOG_FORMAT"] = log_format
    configure_logging(log_format)  # type: ignore[arg-type]
    if bootstrap is None:
        bootstrap = settings.bootstrap
    sessions = sessions_for(settings)
    base = f"http://{host}:{port}"
    if bootstrap:
        job_id, dataset_id = _bootstrap(sessions, settings)
        console.print(
            plain(
                ("Sprout", "bold green"),
                " is starting with dataset ",
                (settings.default_dataset, "bold"),
                ".",
            )
        )
        console.print(f"  first generation job: {base}/v1/generations/{job_id}")
        console.print(f"  items:     {base}/v1/datasets/{dataset_id}/items?status=pending")
        _first_admin(sessions)
    else:
        with sessions() as session:
            if not any_user_exists(session):
                console.print(plain(f"  No users yet: {_sprout_command()} users create admin --role admin"))
    console.print(f"  reviewer UI: {base}/ui")
    console.print(f"  API docs:  {base}/docs  (log in first, or send the token)")
    console.print(f"  datasets:  {base}/v1/datasets")
    console.print(f"  health:    {base}/healthz")
    console.print(
        plain(
            f"  from a shell: {_sprout_command()} generate --dataset ",
            settings.default_dataset,
            " --count 10",
        )
    )
    # log_config=None: uvicorn keeps the handler configure_logging installed, so its lines are JSON too.
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info", log_config=None)
    else:  # each process builds the app from the same environment; the database is what they share
        uvicorn.run(
            "app.cli.serve:logged_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="info",
            log_config=None,
        )


def logged_app() -> FastAPI:
    """The factory each process of `--workers N` calls: its logging first, the way the parent set it up (the
    format travels in SPROUT_LOG_FORMAT), then the app."""
    from app.main import create_app

    settings = get_settings()
    configure_logging(settings.log_format)
    return create_app(settings)


def _sprout_command() -> str:
    """How this shell reached `sprout` (e.g. .venv/bin/sprout), so the printed hint can be pasted as is."""
    invoked = Path(sys.argv[0])
    return str(invoked) if invoked.name == "sprout" and invoked.parent != Path(".") else "sprout"


def _first_admin(sessions: sessionmaker[Session]) -> None:
    """On the very first start, an admin: its password and an API token, printed this once."""
    with transaction(sessions) as session:
        if any_user_exists(session):
            return
        password = generate_password()
        admin = create_user(session, "admin", Role.admin, password)
        token, _ = create_token(session, admin, name="first start")
        audit(session, None, "user.create", admin.name, role=Role.admin.value, first_start=True)
    console.print(
        plain(
            ("  First start: an admin account was created. Keep these; they are shown once.", "bold yellow")
        )
    )
    console.print(plain("    log in to the UI as ", ("admin", "bold"), " with password ", (password, "bold")))
    console.print(plain("    API token: ", (token, "bold"), "  (curl -H 'Authorization: Bearer ...')"))
    console.print(plain(f"    more users: {_sprout_command()} users create NAME --role reviewer"))


def _bootstrap(sessions: sessionmaker[Session], settings: Settings) -> tuple[int, int]:
    """Default dataset with the project's seeds, and a first job unless one is already waiting or running."""
    tasks = parse_seed_file(settings.default_seeds.read_bytes(), filename=settings.default_seeds.name)
    with transaction(sessions) as session:
        dataset = get_or_create_dataset(session, settings.default_dataset)
        result = import_seeds(session, dataset, tasks, source=settings.default_seeds.name)
        active = session.scalar(
            select(GenerationJob.id).where(
                GenerationJob.dataset_id == dataset.id,
                GenerationJob.status.in_([JobStatus.queued, JobStatus.running]),
            )
        )
        registry = BackendRegistry.from_settings(settings)
        params = GenerationParams(count=settings.bootstrap_count)
        job_id = active or queue_job(session, dataset.id, params, settings, registry).id
        dataset_id = dataset.id
    console.print(
        plain(
            f"  seeds: {result.imported} imported, {result.total_seeds} in dataset ", settings.default_dataset
        )
    )
    return job_id, dataset_id
