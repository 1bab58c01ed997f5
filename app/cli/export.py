"""`sprout export`: a dataset's approved items (or a snapshot's copy) as Alpaca, ShareGPT, OpenAI chat JSONL,
parquet or a Hugging Face dataset directory, written as the items are read (in pages), with a progress bar.

Exit codes: 0 done, 2 bad input (unknown dataset or snapshot, nothing to export, a target in the way; nothing is
written), 3 the `train` extra (pyarrow, datasets) is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.cli.common import console, err, fail, plain, sessions_for
from app.core.config import get_settings
from app.core.errors import InvalidFieldError, NotFoundError
from app.datasets.models import Dataset
from app.datasets.service import get_dataset, get_dataset_by_name
from app.finetune import exports
from app.finetune.exports import ExportUnavailableError
from app.finetune.formats import Split
from app.finetune.snapshots import EmptyExportError, ExportSource, count_records

FORMATS = ("alpaca", "sharegpt", "openai", "parquet", "hf")
SPLITS = ("train", "validation", "all")


def _dataset(session, ref: str) -> Dataset:  # noqa: ANN001 (Session)
    """A dataset by name, or by id when no dataset has that name and it is a number."""
    try:
        return get_dataset_by_name(session, ref)
    except NotFoundError:
        if ref.isdigit() and len(ref) < 10:
            return get_dataset(session, int(ref))
        raise


def export_command(
    dataset: Annotated[str, typer.Argument(help="Dataset name (or id).")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="alpaca, sharegpt, openai (chat JSONL), parquet or hf.")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="The file to write (replaced); for hf, a new or empty directory."),
    ],
    snapshot: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, max=2**31 - 1, help="Export this snapshot's copy instead of the current items."),
    ] = None,
    split: Annotated[str, typer.Option(help="A snapshot's split: train, validation or all.")] = "all",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Export a dataset's approved items (or one of its snapshots). hf writes a directory that
    datasets.load_from_disk and load_dataset both read, with parquet files and a dataset card (README.md)."""
    if format not in FORMATS:
        raise fail(f"--format: unknown format {format!r} ({', '.join(FORMATS)})")
    if split not in SPLITS:
        raise fail(f"--split: one of {', '.join(SPLITS)}")
    wanted: Split | None = None if split == "all" else split  # type: ignore[assignment]
    if wanted is not None and snapshot is None:
        raise fail("--split: a split exists only in a snapshot; pass --snapshot too")
    settings = get_settings()
    sessions = sessions_for(settings)
    with sessions() as session:
        try:
            target = _dataset(session, dataset)
        except NotFoundError as exc:
            raise fail(str(exc)) from exc
        total = count_records(session, ExportSource(target.id, snapshot, wanted))
        name = target.name
    columns = (TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=False, disable=quiet) as progress:
            task = progress.add_task("export", total=total or None)

            def on_progress(done: int) -> None:
                progress.update(task, completed=done)

            if format == "hf":
                rows = exports.write_hf(
                    sessions,
                    target.id,
                    out,
                    settings=settings,
                    snapshot_id=snapshot,
                    split=wanted,
                    on_progress=on_progress,
                )
                written = sum(rows.values())
                detail = ", ".join(f"{s} {n}" for s, n in rows.items())
            else:
                written = exports.write_file(
                    sessions,
                    target.id,
                    format,  # type: ignore[arg-type]
                    out,
                    snapshot_id=snapshot,
                    split=wanted,
                    on_progress=on_progress,
                )
                detail = split if snapshot is not None else "approved"
    except (NotFoundError, EmptyExportError, FileExistsError) as exc:
        raise fail(str(exc)) from exc
    except InvalidFieldError as exc:
        raise fail(f"--{exc.field}: {exc.message}") from exc
    except ExportUnavailableError as exc:
        raise fail(str(exc), code=3) from exc
    source = f"snapshot {snapshot} of " if snapshot is not None else ""
    console.print(
        plain(
            "exported ",
            (str(written), "bold"),
            f" items ({detail}) of {source}dataset ",
            (name, "bold"),
            f" as {format} to ",
            str(out),
        )
    )
