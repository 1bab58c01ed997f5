"""`sprout import-seeds`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import console, fail, plain, sessions_for
from app.core.config import get_settings
from app.core.db import transaction
from app.datasets.seed_formats import SeedFormatError, parse_seed_file
from app.datasets.service import get_or_create_dataset, import_seeds

FORMATS = ("auto", "self_instruct", "alpaca", "csv")


def import_seeds_command(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Seed file to import.")
    ],
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="Dataset name (created if missing).")
    ] = "default",
    format: Annotated[str, typer.Option(help="auto, self_instruct, alpaca or csv.")] = "auto",
) -> None:
    """Import seed tasks (Self-Instruct JSONL, Alpaca JSON, CSV). A malformed file imports nothing."""
    if format not in FORMATS:
        raise fail(f"--format: unknown format {format!r} ({', '.join(FORMATS)})")
    try:
        tasks = parse_seed_file(file.read_bytes(), filename=file.name, format=format)  # type: ignore[arg-type]
    except SeedFormatError as exc:
        raise fail(f"{file}: {exc}; nothing was imported") from exc
    sessions = sessions_for(get_settings())
    with transaction(sessions) as session:
        target = get_or_create_dataset(session, dataset)
        result = import_seeds(session, target, tasks, source=file.name)
    console.print(
        plain(
            "dataset ",
            (dataset, "bold"),
            f": imported {result.imported} seed tasks, skipped {result.skipped_existing} already present, "
            f"{result.total_seeds} in all",
        )
    )
