"""`sprout import-items`: bring an instruction file into a dataset, through the filters and the index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.cli.common import console, fail, plain, sessions_for
from app.core.config import get_settings
from app.core.db import transaction
from app.datasets.service import get_or_create_dataset
from app.generation.imports import run_import, start_import
from app.generation.item_formats import ItemFormatError, parse_item_file

FORMATS = ("auto", "alpaca", "sharegpt", "openai")


def import_items_command(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Instruction file.")
    ],
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="Dataset name (created if missing).")
    ] = "default",
    format: Annotated[str, typer.Option(help="auto, alpaca, sharegpt or openai.")] = "auto",
) -> None:
    """Import instruction data (Alpaca, ShareGPT, OpenAI chat JSONL) as items waiting for review; the same filters
    and near-duplicate index as generated items drop what they would drop, each with its reason."""
    if format not in FORMATS:
        raise fail(f"--format: unknown format {format!r} ({', '.join(FORMATS)})")
    try:
        records = parse_item_file(file.read_bytes(), filename=file.name, format=format)  # type: ignore[arg-type]
    except ItemFormatError as exc:
        raise fail(f"{file}: {exc}; nothing was imported") from exc
    settings = get_settings()
    sessions = sessions_for(settings)
    with transaction(sessions) as session:
        target = get_or_create_dataset(session, dataset)
        started = start_import(
            session, target.id, filename=file.name, format=format, records=len(records), by="local"
        )
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("import", total=len(records))
        done = run_import(
            sessions, settings, started.id, records, on_progress=lambda n: progress.update(task, completed=n)
        )
    table = Table(title=plain("import ", (str(done.id), "bold"), " into ", (dataset, "bold")))
    table.add_column("records", justify="right")
    table.add_column("pending (to review)", justify="right")
    table.add_column("near-duplicates", justify="right")
    table.add_column("filtered", justify="right")
    filtered = ", ".join(f"{reason} {n}" for reason, n in sorted(done.filtered.items())) or "0"
    table.add_row(str(done.records), str(done.accepted), str(done.duplicates), filtered)
    console.print(table)
