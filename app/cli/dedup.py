"""`sprout dedup`: greedy near-duplicate removal over a JSONL file (registered by app/cli.py).

The Typer layer only: options, the progress bar and the summary table. The work is app.dedup.file_dedup.dedup_file.
Exit codes: 0 done, 2 bad input or options (nothing written), 3 the semantic extra is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.dedup import FUZZY_SCORERS, SIGNALS, Embedder
from app.dedup.file_dedup import DedupInputError, DedupSummary, dedup_file

__all__ = ["dedup"]

_err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _load_embedder() -> Embedder:
    """The packaged sentence-embedding model, imported only when --semantic asks for it (torch is heavy)."""
    hint = "the semantic signal needs the optional extra: pip install 'sprout[semantic]'"
    try:
        from app.dedup.embeddings import load_default_embedder
    except ImportError as exc:
        raise _fail(f"{hint} ({exc})", 3) from exc
    try:
        return load_default_embedder()
    except (ImportError, RuntimeError, OSError) as exc:
        raise _fail(f"{hint} ({exc})", 3) from exc


def dedup(
    input_file: Annotated[
        Path,
        typer.Argument(metavar="INPUT.jsonl", dir_okay=False, help="JSON Lines file, one record per line."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, help="Where the kept lines go.")],
    report: Annotated[
        Path, typer.Option("--report", "-r", dir_okay=False, help="Where the per-line report (JSONL) goes.")
    ],
    field: Annotated[str, typer.Option("--field", "-f", help="The record field to compare.")] = "instruction",
    threshold: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Drop a record whose ROUGE-L F1 with a kept one is above this."),
    ] = 0.7,
    fuzzy_cutoff: Annotated[
        Optional[float],  # noqa: UP045 (Typer reads the annotation at run time)
        typer.Option(
            "--fuzzy-cutoff",
            min=0.0,
            max=100.0,
            help="Also drop a record whose fuzzy score (0-100) with a kept one is at least this.",
        ),
    ] = None,
    fuzzy_scorer: Annotated[
        str, typer.Option("--fuzzy-scorer", help=f"rapidfuzz scorer: {', '.join(FUZZY_SCORERS)}.")
    ] = "ratio",
    semantic: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--semantic",
            min=-1.0,
            max=1.0,
            help="Also drop a record whose embedding cosine with a kept one is at least this "
            "(needs pip install 'sprout\\[semantic]').",
        ),
    ] = None,
    exact: Annotated[
        bool, typer.Option("--exact/--no-exact", help="Also drop exact repeats of the normalized text.")
    ] = False,
    neighbour_floor: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--neighbour-floor",
            min=0.0,
            max=1.0,
            help="Report kept records' nearest neighbour when its ROUGE-L F1 reaches this (default: the "
            "threshold; lower is slower).",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Remove near-duplicates greedily in file order, as Alpaca does: keep a record iff its ROUGE-L F1 with every earlier kept record is at most the threshold (and no opt-in signal fires). Writes the kept lines unchanged, and a report line per input line: index, kept, nearest kept line and score, dropping signal."""  # noqa: E501 (Typer shows docstring line breaks as is)
    if fuzzy_scorer not in FUZZY_SCORERS:
        choices = ", ".join(FUZZY_SCORERS)
        raise _fail(f"--fuzzy-scorer: unknown scorer {fuzzy_scorer!r}; choose one of: {choices}")
    embedder = _load_embedder() if semantic is not None else None
    columns = (
        TextColumn("[bold]dedup[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=_err, transient=False, disable=quiet) as bar:
        task = bar.add_task("dedup", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = dedup_file(
                input_file,
                output_path=output,
                report_path=report,
                text_field=field,
                threshold=threshold,
                fuzzy_cutoff=fuzzy_cutoff,
                fuzzy_scorer=fuzzy_scorer,
                semantic_threshold=semantic,
                embedder=embedder,
                exact=exact,
                neighbour_floor=neighbour_floor,
                progress=on_progress,
            )
        except DedupInputError as exc:
            raise _fail(f"{input_file}: {exc}; nothing was written") from exc
        except ValueError as exc:
            raise _fail(str(exc)) from exc
    if not quiet:
        _err.print(_summary_table(summary))


def _summary_table(summary: DedupSummary) -> Table:
    table = Table(title="sprout dedup", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("records", str(summary.total))
    table.add_row("kept", str(summary.kept))
    for signal in SIGNALS:
        table.add_row(f"dropped: {signal}", str(summary.dropped_by_signal.get(signal, 0)))
    table.add_row("seconds", f"{summary.seconds:.2f}")
    return table
