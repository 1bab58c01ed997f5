"""Greedy near-duplicate removal over a JSONL file: the logic behind `sprout dedup`, without the CLI.

Semantics (Alpaca's): records are taken in file order; a record is kept if and only if no signal fires against
the records kept before it. With the default options the only signal is ROUGE-L, so a record is kept iff its
highest ROUGE-L F1 against every earlier kept record is <= the threshold. `--exact`, `--fuzzy-cutoff` and
`--semantic` add signals that can drop more records, never fewer.

Files: the input is read and validated completely before anything is written, and the kept file and the report
are written to temporary files beside their targets and renamed into place at the end, so a bad input or a
crash leaves no half-written output. Kept lines are copied byte for byte (other fields untouched).

Report: one JSON object per input line, in order:
  {"index": i, "kept": bool, "nearest_index": j | null, "nearest_score": F1 | null,
   "signal": null | "exact" | "rouge_l" | "fuzzy" | "semantic", "fuzzy_score": s | null,
   "semantic_score": s | null, "fuzzy_index": j | null, "semantic_index": j | null, "exact_index": j | null}
`index` is the 0-based line number; *_index name earlier kept lines. nearest_* is the kept line with the
highest ROUGE-L F1, reported whenever that F1 reaches the neighbour floor (by default the threshold, so every
ROUGE-L drop names its neighbour; lower it with `neighbour_floor` to see kept lines' neighbours too, at a
cost).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from app.dedup import SIGNALS, DuplicateCheck, Embedder, NearDuplicateIndex

__all__ = ["DedupInputError", "DedupSummary", "dedup_file", "read_texts"]


class DedupInputError(ValueError):
    """The input cannot be deduplicated; `line` is 1-based (as editors count), None for the whole file."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class DedupSummary:
    """What a run did: counts per outcome and the wall-clock seconds it took."""

    total: int
    kept: int
    dropped_by_signal: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def dropped(self) -> int:
        return self.total - self.kept


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DedupInputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _lines(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(1-based number, line without its break), the first line without a UTF-8 byte order mark."""
    for number, raw in enumerate(handle, start=1):
        line = raw.rstrip(b"\r\n")
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        yield number, line


def read_texts(path: Path, text_field: str) -> list[str]:
    """The `text_field` string of every line of a JSONL file.

    Raises DedupInputError for the first line that is not UTF-8, not a JSON object, or lacks a string field.
    """
    texts: list[str] = []
    with _open(path) as handle:
        for number, line in _lines(handle):
            try:
                record = json.loads(line)
            except UnicodeDecodeError as exc:
                raise DedupInputError(f"not valid UTF-8 ({exc.reason})", number) from exc
            except json.JSONDecodeError as exc:
                what = "empty line" if not line.strip() else f"not valid JSON ({exc.msg})"
                raise DedupInputError(f"{what}; every line must be a JSON object", number) from exc
            if not isinstance(record, dict):
                raise DedupInputError(f"a JSON {type(record).__name__}, not an object", number)
            if text_field not in record:
                raise DedupInputError(f"no field {text_field!r}", number)
            value = record[text_field]
            if not isinstance(value, str):
                raise DedupInputError(f"field {text_field!r} is {type(value).__name__}, not a string", number)
            texts.append(value)
    return texts


def _kept_lines(path: Path, keep: list[bool]) -> Iterator[bytes]:
    """The kept lines, read again from the input (cheaper than holding every raw line in memory)."""
    with _open(path) as handle:
        count = 0
        for count, line in _lines(handle):
            if count > len(keep):
                break
            if keep[count - 1]:
                yield line
        if count != len(keep):
            raise DedupInputError(f"{path} changed while it was being deduplicated; nothing was written")


def dedup_file(
    input_path: Path,
    *,
    output_path: Path,
    report_path: Path,
    text_field: str = "instruction",
    threshold: float = 0.7,
    fuzzy_cutoff: float | None = None,
    fuzzy_scorer: str = "ratio",
    semantic_threshold: float | None = None,
    embedder: Embedder | None = None,
    exact: bool = False,
    neighbour_floor: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DedupSummary:
    """Deduplicate `input_path` greedily; write kept lines to `output_path` and the report to `report_path`.

    `progress(done, total)` is called as records are checked. Raises DedupInputError (nothing written) for bad
    input or paths, ValueError for bad options.
    """
    started = time.perf_counter()
    paths = {Path(os.path.abspath(p)) for p in (input_path, output_path, report_path)}
    if len(paths) != 3:
        raise DedupInputError("the input, --output and --report must be three different files")
    index = NearDuplicateIndex(
        rouge_threshold=threshold,
        fuzzy_cutoff=fuzzy_cutoff,
        fuzzy_scorer=fuzzy_scorer,
        semantic_threshold=semantic_threshold,
        embedder=embedder,
        exact=exact,
        neighbour_floor=threshold if neighbour_floor is None else neighbour_floor,
    )
    texts = read_texts(input_path, text_field)
    total = len(texts)
    if progress is not None:
        progress(0, total)
    checks = index.check_and_add_many(
        list(enumerate(texts)), progress=None if progress is None else (lambda done: progress(done, total))
    )
    kept_lines = _kept_lines(input_path, [not check.is_duplicate for check in checks])
    report_lines = (_report_line(i, check) for i, check in enumerate(checks))
    _write_atomically({output_path: kept_lines, report_path: report_lines})
    dropped = Counter(check.signal for check in checks if check.is_duplicate)
    return DedupSummary(
        total=total,
        kept=total - sum(dropped.values()),
        dropped_by_signal={signal: dropped.get(signal, 0) for signal in SIGNALS},
        seconds=time.perf_counter() - started,
    )


def _report_line(index: int, check: DuplicateCheck) -> bytes:
    record = {
        "index": index,
        "kept": not check.is_duplicate,
        "nearest_index": check.nearest_key,
        "nearest_score": check.nearest_score,
        "signal": check.signal,
        "fuzzy_score": check.fuzzy_score,
        "semantic_score": check.semantic_score,
        "fuzzy_index": check.fuzzy_key,
        "semantic_index": check.semantic_key,
        "exact_index": check.exact_key,
    }
    return json.dumps(record).encode("utf-8")


def _write_atomically(contents: dict[Path, object]) -> None:
    """Write each file's lines to a temporary file beside it, then rename them all into place."""
    temporaries: list[tuple[str, Path]] = []
    try:
        for target, lines in contents.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            temporaries.append((temp, target))
            with os.fdopen(handle, "wb") as out:
                for line in lines:  # type: ignore[attr-defined]
                    out.write(line)
                    out.write(b"\n")
        for temp, target in temporaries:
            os.replace(temp, target)
    except BaseException:
        for temp, _ in temporaries:
            if os.path.exists(temp):
                os.unlink(temp)
        raise
