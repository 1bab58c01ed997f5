"""Entry point: `python -m app.finetune.trainer CONFIG_JSON_PATH`.

Exit codes: 0 after the result event; 1 after an error event (any exception, MemoryError included; the
traceback goes to stderr); 2 for a usage error. SIGTERM keeps its default action, so the process ends at once
with a non-zero status: a Python handler would only run between bytecodes, and one training step can keep the
interpreter inside torch for seconds. The process starts no children (data loading stays in-process).

The trainer runs in a process group of its own, so a supervisor killed without warning (SIGKILL, the
out-of-memory killer) cannot take it down by signal; instead a daemon thread watches the parent and ends the
process (and its group) within a second once the supervisor is gone. Otherwise the orphan would train on,
holding the CPU and writing checkpoints into the work directory that the job's next attempt resumes from.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
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


# The supervisor's pid (app/finetune/local.py sets it): a parent that died before this process could look is
# noticed too, since the orphan's parent is then already someone else.
PARENT_PID_ENV = "SPROUT_TRAINER_PARENT_PID"
PARENT_POLL_SECONDS = 0.5


def _end_process_group() -> None:
    """SIGKILL this process's group when it leads one (the supervisor starts it so), else only itself."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def watch_parent(
    parent: int | None = None,
    *,
    interval: float = PARENT_POLL_SECONDS,
    on_orphaned: Callable[[], None] = _end_process_group,
) -> threading.Thread:
    """Start a daemon thread that ends this process once its parent is no longer `parent` (default: the pid in
    SPROUT_TRAINER_PARENT_PID, else the parent now). Polling `os.getppid()` works wherever the parent is
    reparented away (Linux, macOS), and unlike PR_SET_PDEATHSIG it does not fire when merely the thread that
    started the process ends."""
    if parent is None:
        named = os.environ.get(PARENT_PID_ENV, "")
        parent = int(named) if named.isdigit() else os.getppid()
    expected = parent

    def watch() -> None:
        while os.getppid() == expected:
            time.sleep(interval)
        print(
            f"trainer: its supervisor (pid {expected}) is gone; stopping (the job's next attempt resumes "
            "from the last checkpoint)",
            file=sys.stderr,
            flush=True,
        )
        on_orphaned()

    thread = threading.Thread(target=watch, name="sprout-trainer-parent-watch", daemon=True)
    thread.start()
    return thread


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
    watch_parent()  # only as a process of its own: a caller of main() in-process keeps its own lifetime
    sys.exit(main())
