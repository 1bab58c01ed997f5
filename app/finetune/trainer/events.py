"""The event file: how the trainer process talks to the job runner.

One JSON object per line, appended to `OUTPUT_DIR/events.jsonl` and flushed line by line, so the runner can
tail it while training runs and a killed process leaves only whole lines behind (one small write each).
stdout and stderr stay free for library noise and tracebacks. Non-finite floats (a diverged loss) are written
as null: NaN is not JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


class EventWriter:
    """Appends events to the file; each method is one event type of the runner's contract."""

    def __init__(self, output_dir: str | Path) -> None:
        directory = Path(output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / EVENTS_FILE
        self._file = self.path.open("a", encoding="utf-8")

    def emit(self, event: dict[str, Any]) -> None:
        self._file.write(json.dumps(_finite(event), ensure_ascii=False, allow_nan=False) + "\n")
        self._file.flush()

    def message(self, message: str, level: str = "info") -> None:
        self.emit({"type": "message", "level": level, "message": message})

    def metrics(self, data: dict[str, Any]) -> None:
        self.emit({"type": "metrics", "data": data})

    def checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        self.emit({"type": "checkpoint", "step": step, "path": path, "metrics": metrics})

    def evaluation(
        self, valid_loss_before: float | None, valid_loss_after: float | None, samples: list[dict[str, str]]
    ) -> None:
        self.emit(
            {
                "type": "evaluation",
                "data": {
                    "valid_loss_before": valid_loss_before,
                    "valid_loss_after": valid_loss_after,
                    "samples": samples,
                },
            }
        )

    def result(self, **fields: Any) -> None:
        self.emit({"type": "result", **fields})

    def error(self, exc: BaseException) -> None:
        self.emit({"type": "error", "message": f"{type(exc).__name__}: {exc}"})

    def close(self) -> None:
        self._file.close()
