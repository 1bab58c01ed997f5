"""`sprout dedup` end to end through Typer: files, exit codes, messages, the optional semantic extra."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import app.dedup.embeddings
from app.cli.dedup import dedup

cli = typer.Typer()
cli.command("dedup")(dedup)


@cli.command("version")
def _version() -> None:  # a second command, so that "dedup" is a subcommand as in app/cli.py
    typer.echo("test")


runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(cli, ["dedup", *map(str, args)])
    return result.exit_code, result.output


def test_dedup_of_real_instructions(tmp_path: Path, shared_data: Path) -> None:
    source = tmp_path / "bench.jsonl"
    with gzip.open(shared_data / "bench_instructions.jsonl.gz", "rb") as packed, open(source, "wb") as out:
        for _, line in zip(range(2000), packed, strict=False):
            out.write(line)
    kept, report = tmp_path / "kept.jsonl", tmp_path / "report.jsonl"
    code, output = run(
        source, "--field", "instruction", "--threshold", "0.7", "--output", kept, "--report", report
    )
    assert code == 0, output
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(rows) == 2000 and [r["index"] for r in rows] == list(range(2000))
    kept_lines = kept.read_text().splitlines()
    assert len(kept_lines) == sum(r["kept"] for r in rows) and 100 < len(kept_lines) < 2000
    dropped = [r for r in rows if not r["kept"]]
    assert all(r["signal"] == "rouge_l" and r["nearest_score"] > 0.7 for r in dropped)
    assert all(rows[r["nearest_index"]]["kept"] and r["nearest_index"] < r["index"] for r in dropped)
    assert "kept" in output and "dropped: rouge_l" in output and "seconds" in output  # the summary


def test_bad_line_exits_2_naming_line_and_field(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"instruction": "a"}\n{"prompt": "b"}\n')
    code, output = run(source, "--output", tmp_path / "k.jsonl", "--report", tmp_path / "r.jsonl")
    assert code == 2
    assert "line 2" in output and "'instruction'" in output and "nothing was written" in output
    assert not (tmp_path / "k.jsonl").exists() and not (tmp_path / "r.jsonl").exists()


def test_bad_options_exit_2(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"instruction": "a"}\n')
    out = ("--output", tmp_path / "k.jsonl", "--report", tmp_path / "r.jsonl")
    code, output = run(source, "--fuzzy-cutoff", "90", "--fuzzy-scorer", "nope", *out)
    assert code == 2 and "'nope'" in output
    code, _ = run(source, "--threshold", "1.5", *out)
    assert code == 2
    code, output = run(tmp_path / "missing.jsonl", *out)
    assert code == 2 and "cannot read" in output


def test_semantic_without_the_extra_explains_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable() -> None:
        raise app.dedup.embeddings.EmbeddingsUnavailableError("torch is not installed")

    monkeypatch.setattr(app.dedup.embeddings, "load_default_embedder", unavailable)
    source = tmp_path / "in.jsonl"
    source.write_text('{"instruction": "a"}\n')
    code, output = run(source, "--semantic", "0.9", "--output", tmp_path / "k", "--report", tmp_path / "r")
    assert code == 3
    assert "pip install 'sprout[semantic]'" in " ".join(output.split())


def test_semantic_with_an_embedder_drops_paraphrases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class SortedWords:
        def encode(self, texts: Sequence[str]) -> np.ndarray:
            rows = np.zeros((len(texts), 16), dtype=np.float32)
            for i, text in enumerate(texts):
                for word in text.lower().split():
                    rows[i, sum(map(ord, word)) % 16] += 1
            return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)

    monkeypatch.setattr(app.dedup.embeddings, "load_default_embedder", SortedWords)
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"instruction": "write a poem about the sea"}\n{"instruction": "the sea a poem about write"}\n'
    )
    report = tmp_path / "r.jsonl"
    code, output = run(
        source, "--semantic", "0.99", "--output", tmp_path / "k.jsonl", "--report", report, "-q"
    )
    assert code == 0, output
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert rows[1]["signal"] == "semantic" and rows[1]["semantic_index"] == 0


def test_sprout_cli_registers_dedup() -> None:
    from app.cli import app as sprout_app

    result = runner.invoke(sprout_app, ["dedup", "--help"])
    assert result.exit_code == 0 and "INPUT.jsonl" in result.output and "--threshold" in result.output
