"""Exports of a dataset's approved items, or of a snapshot's copy: byte streams for HTTP, files and directories
for the CLI. Every writer reads the items in keyset pages (app/finetune/snapshots.py) and writes as it reads.

- Alpaca, ShareGPT (JSON arrays, element by element) and OpenAI chat JSONL: `stream_text` yields chunks as the
  pages come in; `write_file` writes the same chunks to a file.
- Parquet: pyarrow's ParquetWriter, a row group per batch of rows. Over HTTP the file is written to a temporary
  file first (a parquet footer comes last), then streamed from it; the file is unlinked as soon as it is open,
  so nothing is left behind however the download ends.
- Hugging Face: a directory with `save_to_disk`'s Arrow copy (`load_from_disk(dir)`), the parquet files under
  data/ that the card's YAML names (`load_dataset(dir)`), and README.md, the dataset card. It is built in a
  staging directory beside the target and renamed into place at the end, so a failed export leaves nothing.

pyarrow and datasets come with the `train` extra; they are imported when a parquet or Hugging Face export runs,
so the service starts without them (`ExportUnavailableError` then says what to install).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.finetune import formats
from app.finetune.dataset_card import CardInfo, parquet_name, render_card
from app.finetune.formats import ExportRecord, Split, TextFormat
from app.finetune.snapshots import (
    PAGE_SIZE,
    ExportSource,
    dataset_summary,
    iter_record_pages,
    iter_records,
    resolve_source,
)

FileFormat = Literal["alpaca", "sharegpt", "openai", "parquet"]
FILE_FORMATS: tuple[FileFormat, ...] = ("alpaca", "sharegpt", "openai", "parquet")
ROW_GROUP = 10_000  # rows per parquet row group (a few MB of text)
READ_CHUNK = 1 << 20
Progress = Callable[[int], None]  # records written so far


class ExportUnavailableError(RuntimeError):
    """A parquet or Hugging Face export without pyarrow / datasets installed."""


@dataclass(slots=True)
class Tally:
    """What a writer wrote: rows, and rows by language and by model (what the dataset card reports)."""

    rows: int = 0
    languages: Counter[str] = field(default_factory=Counter)
    models: Counter[str | None] = field(default_factory=Counter)

    def add(self, record: ExportRecord) -> None:
        self.rows += 1
        self.languages[record.language] += 1
        self.models[record.model] += 1


# --- names --------------------------------------------------------------------------------------------------------


def export_filename(
    dataset_name: str, fmt: str, snapshot_id: int | None = None, split: Split | None = None
) -> str:
    """`<dataset>-approved.json`, `<dataset>-snapshot-3-train.jsonl`, ... (extension by format; none for hf)."""
    stem = formats.file_stem(dataset_name)
    what = "approved" if snapshot_id is None else f"snapshot-{snapshot_id}"
    return f"{stem}-{what}{f'-{split}' if split else ''}{formats.EXTENSIONS.get(fmt, '')}"


def content_disposition(filename: str) -> str:
    """An attachment header that no file name can break: an ASCII-only fallback in quotes (the name is reduced to
    letters, digits, '.', '_' and '-') and the full name percent-encoded (RFC 6266 / 5987)."""
    stem, dot, ext = filename.rpartition(".")
    fallback = formats.file_stem(stem if dot else filename, ascii_only=True) + (f".{ext}" if dot else "")
    fallback = (
        fallback if all(c.isalnum() or c in "._-" for c in fallback) and fallback.isascii() else "export"
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


# --- text formats -------------------------------------------------------------------------------------------------


def stream_text(
    reader: Session | sessionmaker[Session],
    source: ExportSource,
    fmt: TextFormat,
    *,
    page_size: int = PAGE_SIZE,
    on_progress: Progress | None = None,
) -> Iterator[bytes]:
    """The source in `fmt`, as chunks of bytes; pages are read only as the chunks are taken."""
    return formats.encode(fmt, _counted(iter_records(reader, source, page_size=page_size), on_progress))


def _counted(
    records: Iterator[ExportRecord], on_progress: Progress | None, tally: Tally | None = None
) -> Iterator[ExportRecord]:
    done = 0
    for record in records:
        yield record
        done += 1
        if tally is not None:
            tally.add(record)
        if on_progress is not None and done % 500 == 0:
            on_progress(done)
    if on_progress is not None:
        on_progress(done)


# --- parquet ------------------------------------------------------------------------------------------------------


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover (the test environment has them)
        raise ExportUnavailableError(
            "parquet and Hugging Face exports need pyarrow and datasets: pip install 'sprout[train]'"
        ) from exc
    return pa, pq


def parquet_schema(with_split: bool = False) -> Any:
    pa, _ = _pyarrow()
    fields = [
        ("item_id", pa.int64()),
        ("instruction", pa.string()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("language", pa.string()),
        ("model", pa.string()),
    ]
    if with_split:
        fields.append(("split", pa.string()))
    return pa.schema(fields)


def write_parquet(
    pages: Iterator[list[ExportRecord]],
    path: Path,
    *,
    with_split: bool = False,
    on_progress: Progress | None = None,
    row_group: int = ROW_GROUP,
) -> Tally:
    """Write pages of records as one parquet file, a row group per `row_group` rows; at most that many rows are
    held at once."""
    pa, pq = _pyarrow()
    schema = parquet_schema(with_split)
    tally = Tally()
    rows: list[dict[str, Any]] = []
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        for page in pages:
            for record in page:
                rows.append(formats.table_row(record, with_split=with_split))
                tally.add(record)
            if len(rows) >= row_group:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows = []
            if on_progress is not None:
                on_progress(tally.rows)
        if rows or tally.rows == 0:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    return tally


def stream_parquet(
    reader: Session | sessionmaker[Session], source: ExportSource, *, page_size: int = PAGE_SIZE
) -> Iterator[bytes]:
    """Write the source as parquet to a temporary file now, then return a stream of its bytes. The file is
    unlinked as soon as it is open again: the stream holds the only reference, and closing it (or losing it)
    frees the space."""
    handle, name = tempfile.mkstemp(prefix="sprout-export-", suffix=".parquet")
    os.close(handle)
    path = Path(name)
    try:
        write_parquet(
            iter_record_pages(reader, source, page_size=page_size),
            path,
            with_split=source.snapshot_id is not None,
        )
        stream = path.open("rb")
    finally:
        path.unlink(missing_ok=True)
    return _read_chunks(stream)


def _read_chunks(stream: Any) -> Iterator[bytes]:
    with stream:
        while data := stream.read(READ_CHUNK):
            yield data


# --- files and directories (the CLI) ------------------------------------------------------------------------------


def _staging(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")


def write_file(
    sessions: sessionmaker[Session],
    dataset_id: int,
    fmt: FileFormat,
    out: Path,
    *,
    snapshot_id: int | None = None,
    split: Split | None = None,
    page_size: int = PAGE_SIZE,
    on_progress: Progress | None = None,
) -> int:
    """Export to one file (replaced atomically if it exists); returns the records written. NotFoundError,
    EmptyExportError, InvalidFieldError as `resolve_source` raises them, before anything is written."""
    with sessions() as session:
        _, _, source = resolve_source(session, dataset_id, snapshot_id, split)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging(out)
    try:
        if fmt == "parquet":
            pages = iter_record_pages(sessions, source, page_size=page_size)
            written = write_parquet(
                pages, staging, with_split=source.snapshot_id is not None, on_progress=on_progress
            ).rows
        else:
            tally = Tally()
            records = _counted(iter_records(sessions, source, page_size=page_size), on_progress, tally)
            with staging.open("wb") as sink:
                for chunk in formats.encode(fmt, records):
                    sink.write(chunk)
            written = tally.rows
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)
    return written


def write_hf(
    sessions: sessionmaker[Session],
    dataset_id: int,
    out: Path,
    *,
    settings: Settings,
    snapshot_id: int | None = None,
    split: Split | None = None,
    page_size: int = PAGE_SIZE,
    on_progress: Progress | None = None,
) -> dict[str, int]:
    """Export as a Hugging Face dataset directory (see the module's docstring); returns rows per split. A
    snapshot gives its train and validation splits (the non-empty ones, or the one asked for); the current
    approved items are one "train" split. `out` must not exist, or be an empty directory."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory")
    snapshot_info: dict[str, Any] | None = None
    with sessions() as session:
        dataset, snapshot, source = resolve_source(session, dataset_id, snapshot_id, split)
        summary = snapshot.summary if snapshot is not None else dataset_summary(session, dataset, settings)
        dataset_name = dataset.name
        if snapshot is None:
            wanted: list[tuple[str, ExportSource]] = [("train", source)]
        else:
            counts = {"train": snapshot.train, "validation": snapshot.validation}
            names: list[Split] = [split] if split is not None else [s for s in formats.SPLITS if counts[s]]
            wanted = [(name, ExportSource(dataset_id, snapshot.id, name)) for name in names]
            snapshot_info = {
                "id": snapshot.id,
                "content_hash": snapshot.content_hash,
                "seed": snapshot.seed,
                "validation_fraction": snapshot.validation_fraction,
                "created_at": snapshot.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            }
    _pyarrow()
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover
        raise ExportUnavailableError(
            "Hugging Face exports need datasets: pip install 'sprout[train]'"
        ) from exc

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging(out)
    cache = Path(tempfile.mkdtemp(prefix="sprout-hf-cache-"))
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        (staging / "data").mkdir(parents=True)
        tally = Tally()
        rows: dict[str, int] = {}
        parts: dict[str, Any] = {}
        for name, part_source in wanted:
            done_before = tally.rows
            path = staging / "data" / parquet_name(name)
            progress = (lambda n, base=done_before: on_progress(base + n)) if on_progress else None
            written = write_parquet(
                iter_record_pages(sessions, part_source, page_size=page_size), path, on_progress=progress
            )
            rows[name] = written.rows
            tally.rows += written.rows
            tally.languages.update(written.languages)
            tally.models.update(written.models)
            # Arrow from the parquet just written (batch by batch): the two copies hold the same rows even when the
            # live items change meanwhile. A fresh cache directory, so no cached build of another export is reused.
            parts[name] = datasets.Dataset.from_parquet(str(path), cache_dir=str(cache / name))
        datasets.DatasetDict(parts).save_to_disk(str(staging))
        card = CardInfo(
            dataset=dataset_name,
            splits=rows,
            languages=dict(tally.languages),
            models=dict(tally.models),
            thresholds=summary.get("thresholds") or {},
            review=summary.get("review") or {},
            snapshot=snapshot_info,
        )
        (staging / "README.md").write_text(render_card(card), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    return rows
