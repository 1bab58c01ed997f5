"""Entry point: `python -m app.finetune.trainer CONFIG_JSON_PATH`.

Exit codes: 0 after the result event; 1 after an error event (any exception, MemoryError included; the
traceback goes to stderr); 2 for a usage error. SIGTERM keeps its default action, so the process ends at once
with a non-zero status: a Python handler would only run between bytecodes, and one training step can keep the
interpreter inside torch for seconds. The process starts no children (data loading stays in-process).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

# Offline by design: the base model is a local checkpoint, and a training run must never wait on the hub.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# stderr is where a failed run's traceback goes: keep progress bars out of it.
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _output_dir_of(path: str) -> str | None:
    """The output_dir of a config that failed validation, if it names one: where its error event goes."""
    try:
        value = json.loads(Path(path).read_text()).get("output_dir")
    except Exception:
        return None
    return value if isinstance(value, str) and Path(value).is_absolute() else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m app.finetune.trainer CONFIG_JSON_PATH", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    from app.finetune.trainer.config import load_config
    from app.finetune.trainer.events import EventWriter

    events = None
    try:
        try:
            config = load_config(argv[0])
        except Exception:
            output_dir = _output_dir_of(argv[0])
            if output_dir is not None:
                events = EventWriter(output_dir)
            raise
        events = EventWriter(config.output_dir)
        from app.finetune.trainer.train import run  # torch, transformers, trl: seconds to import

        run(config, events)
        return 0
    except BaseException as exc:  # every failure must end as an error event and exit code 1
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        traceback.print_exc()
        if events is not None:
            try:
                events.error(exc)
            except Exception:
                traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
