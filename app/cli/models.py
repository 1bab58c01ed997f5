"""`sprout models prepare`: the embedded model as a Hugging Face checkpoint (what a local vLLM serves and what
fine-tuning starts from)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from app.cli.common import console, fail, plain
from app.core.config import DEFAULT_MODEL_NAME, get_settings

app = typer.Typer(help="Model files.", no_args_is_help=True)


@app.command("prepare")
def prepare(
    out: Annotated[
        Optional[Path], typer.Option(help="Checkpoint directory; default: MODELS_DIR/SmolLM2-135M-Instruct.")
    ] = None,  # noqa: UP045
    force: Annotated[
        bool, typer.Option("--force", help="Convert again even if a complete checkpoint exists.")
    ] = False,
) -> None:
    """Convert the embedded GGUF model (SmolLM2-135M-Instruct) into a Hugging Face checkpoint (safetensors)."""
    from app.llm.checkpoint import CheckpointError, prepare_hf_checkpoint

    target = out or get_settings().models_dir / DEFAULT_MODEL_NAME
    try:
        with console.status("converting the GGUF model (about half a minute)"):
            path = prepare_hf_checkpoint(target, force=force)
    except CheckpointError as exc:
        raise fail(str(exc)) from exc
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    console.print(plain("checkpoint ready: ", str(path), f" ({size / 1e6:.0f} MB)"))
