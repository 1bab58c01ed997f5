"""dedup_file: greedy in file order, kept lines verbatim, a report line per input line, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.dedup.file_dedup import DedupInputError, dedup_file, read_texts

RECORDS = [
    {"instruction": "Give three tips for staying healthy.", "output": "Eat well."},
    {"instruction": "Give three tips for staying healthy!", "output": "Sleep."},  # ROUGE-L 1.0 with line 0
    {"instruction": "Translate the sentence into French.", "input": "Hello", "output": "Bonjour"},
    {"instruction": "Give four tips for staying healthy.", "output": "Move."},  # 5/6 with line 0
    {"instruction": "翻译成英文：你好", "output": "Hello"},  # noqa: RUF001 (a Chinese colon)
    {"instruction": "请翻译成英文：你好吗", "output": "How are you"},  # noqa: RUF001 (0.875 with line 4)
    {"instruction": "", "output": "empty"},
]


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_greedy_dedup_writes_kept_lines_and_a_report(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    seen: list[tuple[int, int]] = []
    summary = dedup_file(
        source,
        output_path=tmp_path / "kept.jsonl",
        report_path=tmp_path / "report.jsonl",
        progress=lambda done, total: seen.append((done, total)),
    )
    kept_lines = (tmp_path / "kept.jsonl").read_text(encoding="utf-8").splitlines()
    source_lines = source.read_text(encoding="utf-8").splitlines()
    assert kept_lines == [source_lines[i] for i in (0, 2, 4, 6)]  # byte for byte, other fields kept
    report = read_jsonl(tmp_path / "report.jsonl")
    assert [r["index"] for r in report] == list(range(7))
    assert [r["kept"] for r in report] == [True, False, True, False, True, False, True]
    assert report[1] | {} == {
        "index": 1,
        "kept": False,
        "nearest_index": 0,
        "nearest_score": 1.0,
        "signal": "rouge_l",
        "fuzzy_score": None,
        "semantic_score": None,
        "fuzzy_index": None,
        "semantic_index": None,
        "exact_index": None,
    }
    assert (report[3]["nearest_index"], report[3]["nearest_score"]) == (0, pytest.approx(5 / 6))
    assert (report[5]["nearest_index"], report[5]["nearest_score"]) == (4, pytest.approx(0.875))
    assert report[0]["nearest_index"] is None and report[2]["nearest_score"] is None
    assert (summary.total, summary.kept, summary.dropped) == (7, 4, 3)
    assert summary.dropped_by_signal == {"exact": 0, "rouge_l": 3, "fuzzy": 0, "semantic": 0}
    assert summary.seconds > 0
    assert seen[0] == (0, 7) and seen[-1] == (7, 7)


def test_options_reach_the_index(tmp_path: Path) -> None:
    records = [
        {"text": "Sort these numbers: 3 1 2"},
        {"text": "sort these numbers:   3 1 2"},  # exact after normalization
        {"text": "Srot thees numbers: 3 1 2"},  # fuzzy, not ROUGE-L (F1 4/6)
        {"text": "Name a planet"},
        {"text": "Name a planet please, any planet"},  # F1 2/3: only a neighbour above the floor
    ]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    summary = dedup_file(
        source,
        output_path=tmp_path / "kept.jsonl",
        report_path=tmp_path / "report.jsonl",
        text_field="text",
        exact=True,
        fuzzy_cutoff=85,
        neighbour_floor=0.5,
    )
    report = read_jsonl(tmp_path / "report.jsonl")
    assert [r["signal"] for r in report] == [None, "exact", "fuzzy", None, None]
    assert report[1]["exact_index"] == 0 and report[2]["fuzzy_index"] == 0 and report[2]["fuzzy_score"] >= 85
    assert (report[4]["nearest_index"], report[4]["nearest_score"]) == (3, pytest.approx(2 / 3))
    assert summary.dropped_by_signal["exact"] == 1 and summary.dropped_by_signal["fuzzy"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"instruction": "ok"}\nnot json\n', "line 2: not valid JSON"),
        (b'{"instruction": "ok"}\n{"output": "x"}\n', "line 2: no field 'instruction'"),
        (b'{"instruction": 3}\n', "line 1: field 'instruction' is int, not a string"),
        (b'["instruction"]\n', "line 1: a JSON list, not an object"),
        (b'{"instruction": "ok"}\n\n{"instruction": "b"}\n', "line 2: empty line"),
        (b'{"instruction": "\xff"}\n', "line 1: not valid UTF-8"),
    ],
)
def test_bad_input_names_the_line_and_writes_nothing(tmp_path: Path, content: bytes, message: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(content)
    kept, report = tmp_path / "kept.jsonl", tmp_path / "report.jsonl"
    kept.write_text("previous run\n")
    with pytest.raises(DedupInputError, match=message):
        dedup_file(source, output_path=kept, report_path=report)
    assert kept.read_text() == "previous run\n" and not report.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "kept.jsonl"]  # no temporary files left


def test_paths_must_differ_and_exist(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    with pytest.raises(DedupInputError, match="different"):
        dedup_file(source, output_path=source, report_path=tmp_path / "r.jsonl")
    with pytest.raises(DedupInputError, match="cannot read"):
        dedup_file(tmp_path / "missing.jsonl", output_path=tmp_path / "k", report_path=tmp_path / "r")


def test_bad_options_are_value_errors_before_any_reading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'nope'"):
        dedup_file(tmp_path / "x", output_path=tmp_path / "k", report_path=tmp_path / "r", fuzzy_cutoff=90,
                   fuzzy_scorer="nope")  # fmt: skip


def test_byte_order_mark_and_crlf_are_accepted(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"instruction": "a b c"}\r\n{"instruction": "a b c"}\r\n')
    assert read_texts(source, "instruction") == ["a b c", "a b c"]
    dedup_file(source, output_path=tmp_path / "k.jsonl", report_path=tmp_path / "r.jsonl")
    assert (tmp_path / "k.jsonl").read_bytes() == b'{"instruction": "a b c"}\n'


def test_empty_file_gives_empty_outputs(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"")
    summary = dedup_file(source, output_path=tmp_path / "k.jsonl", report_path=tmp_path / "r.jsonl")
    assert (
        summary.total == 0
        and (tmp_path / "k.jsonl").read_bytes() == b"" == (tmp_path / "r.jsonl").read_bytes()
    )
