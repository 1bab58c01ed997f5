"""Fixtures shared by the fine-tuning integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def base_checkpoint() -> Path:
    """The embedded SmolLM2 as a Hugging Face checkpoint, made once and reused.

    It lives in Sprout's cache directory (SPROUT_CACHE_DIR, else ~/.cache/sprout), where the vLLM tests keep the
    same checkpoint: converting takes about half a minute, reusing a complete one (its marker names the same
    GGUF) a fraction of a second.
    """
    from app.core.config import DEFAULT_MODEL_NAME
    from app.llm.checkpoint import prepare_hf_checkpoint

    root = os.environ.get("SPROUT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sprout"
    )
    return prepare_hf_checkpoint(Path(root) / "checkpoints" / DEFAULT_MODEL_NAME).resolve()
