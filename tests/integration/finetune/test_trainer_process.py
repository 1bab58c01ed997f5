"""The trainer process for real: SmolLM2-135M, a dozen tiny Chinese and English examples, a few steps.

Token choices differ between CPUs, so nothing here checks what the model says: only the bookkeeping (events,
files, token counts, exit codes) that holds for any output. One training run is shared by most tests.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.model]

TRAIN = [
    ("翻译成英文：你好", "Hello"),
    ("翻译成英文：谢谢", "Thank you"),
    ("翻译成英文：再见", "Goodbye"),
    ("翻译成英文：早上好", "Good morning"),
    ("翻译成英文：晚安", "Good night"),
    ("翻译成中文：cat", "猫"),
    ("翻译成中文：dog", "狗"),
    ("Translate into Chinese: water", "水"),
    ("What is 2 + 2?", "4"),
    ("Name a primary colour.", "Red"),
    ("What is the capital of France?", "Paris"),
    ("Reverse the word 'abc'.", "cba"),
]
VALID = [("翻译成英文：苹果", "Apple"), ("What is 3 + 5?", "8"), ("翻译成中文：book", "书")]
MAX_LENGTH = 128
BATCH = 2
STEPS = 3


def write_jsonl(path: Path, pairs: list[tuple[str, str]], system: str | None = None) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for user, assistant in pairs:
            messages = [{"role": "system", "content": system}] if system else []
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
            handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    return path


def write_config(path: Path, **fields: Any) -> Path:
    path.write_text(json.dumps(fields))
    return path


def trainer_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "app.finetune.trainer", str(config)]


def run_trainer(config: Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        trainer_command(config),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


def read_events(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / "events.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def base_config(base_checkpoint: Path, data: Path, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    config = {
        "base_model": str(base_checkpoint),
        "train_file": str(data / "train.jsonl"),
        "validation_file": str(data / "valid.jsonl"),
        "output_dir": str(output_dir),
        "n_epochs": 3,
        "batch_size": BATCH,
        "learning_rate": 2e-4,
        "seed": 42,
        "max_length": MAX_LENGTH,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "max_steps": STEPS,
        "threads": 1,  # steadier than 2 on a busy 2-core machine (OpenMP threads waiting on each other)
        "save_steps": None,
        "eval_samples": 2,
        "merge": True,
        "resume": True,
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trainer-data")
    write_jsonl(root / "train.jsonl", TRAIN)
    write_jsonl(root / "valid.jsonl", VALID, system="Answer briefly.")
    return root


@pytest.fixture(scope="module")
def trained(base_checkpoint: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real run: 3 steps of batch 2 with a validation file, evaluation samples and a merged model."""
    root = tmp_path_factory.mktemp("trainer-run")
    output_dir = root / "out"
    config = write_config(root / "config.json", **base_config(base_checkpoint, data, output_dir))
    started = time.monotonic()
    result = run_trainer(config, cwd=root)
    elapsed = time.monotonic() - started
    print(f"trainer run: {elapsed:.1f} s", file=sys.stderr)
    assert result.returncode == 0, result.stderr[-4000:]
    return {"output_dir": output_dir, "events": read_events(output_dir), "config": config, "root": root}


def test_events_start_with_messages_and_end_with_evaluation_then_result(trained):
    events = trained["events"]
    assert events[0] == {"type": "message", "level": "info", "message": "loading base model"}
    assert [e["type"] for e in events[-2:]] == ["evaluation", "result"]
    assert not of_type(events, "error")
    messages = [e["message"] for e in of_type(events, "message")]
    assert f"training {len(TRAIN)} examples, {STEPS} steps" in messages
    assert "saving adapter" in messages


def test_smollm2_template_falls_back_to_completion_only_with_a_warning(trained):
    events = trained["events"]
    warnings = [e["message"] for e in of_type(events, "message") if e["level"] == "warn"]
    assert any("no generation markers" in w and "completion-only" in w for w in warnings)
    assert of_type(events, "result")[0]["masking"] == "completion_only"


def test_metrics_come_once_per_step_with_finite_losses(trained):
    metrics = [e["data"] for e in of_type(trained["events"], "metrics")]
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    for m in metrics:
        assert m["total_steps"] == STEPS
        assert finite(m["train_loss"]) and m["train_loss"] > 0
        assert finite(m["learning_rate"]) and m["learning_rate"] > 0
        assert finite(m["tokens_per_s"]) and m["tokens_per_s"] > 0
        assert finite(m["epoch"]) and 0 < m["epoch"] <= 1
        assert 0 <= m["train_mean_token_accuracy"] <= 1
    assert [m["epoch"] for m in metrics] == sorted(m["epoch"] for m in metrics)
    # The run ends mid-epoch; the epoch-end evaluation lands on the last step's metrics.
    assert finite(metrics[-1]["valid_loss"])


def test_checkpoint_event_names_a_saved_adapter(trained):
    checkpoints = of_type(trained["events"], "checkpoint")
    assert [c["step"] for c in checkpoints] == [STEPS]
    checkpoint = checkpoints[0]
    assert checkpoint["path"] == f"checkpoint-{STEPS}"
    directory = trained["output_dir"] / checkpoint["path"]
    assert (directory / "adapter_model.safetensors").is_file() and (
        directory / "trainer_state.json"
    ).is_file()
    assert checkpoint["metrics"]["step"] == STEPS and finite(checkpoint["metrics"]["valid_loss"])


def test_evaluation_compares_base_and_tuned(trained):
    evaluation = of_type(trained["events"], "evaluation")[0]["data"]
    assert finite(evaluation["valid_loss_before"]) and finite(evaluation["valid_loss_after"])
    samples = evaluation["samples"]
    assert [s["instruction"] for s in samples] == [user for user, _ in VALID[:2]]
    for sample in samples:
        assert isinstance(sample["base"], str) and isinstance(sample["tuned"], str)


def test_result_adapter_and_merged_model(trained):
    from transformers import AutoModelForCausalLM

    result = of_type(trained["events"], "result")[0]
    output_dir = trained["output_dir"]
    assert result["adapter_dir"] == "adapter" and result["merged_dir"] == "merged"
    adapter = output_dir / result["adapter_dir"]
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8 and adapter_config["peft_type"] == "LORA"
    model = AutoModelForCausalLM.from_pretrained(output_dir / result["merged_dir"])
    assert model.config.model_type == "llama"
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert finite(result["train_runtime_s"]) and result["train_runtime_s"] > 0
    assert result["tokens_per_s"] == pytest.approx(
        result["trained_tokens"] / result["train_runtime_s"], rel=0.01
    )


def test_trained_tokens_are_the_tokens_of_the_batches_seen(trained, base_checkpoint: Path):
    """STEPS batches of BATCH examples: the count lies between the shortest and the longest such examples."""
    from transformers import AutoTokenizer

    from app.finetune.trainer.masking import to_prompt_completion

    tokenizer = AutoTokenizer.from_pretrained(base_checkpoint)
    lengths = sorted(
        min(MAX_LENGTH, len(tokenizer(pair["prompt"] + pair["completion"])["input_ids"]))
        for pair in (
            to_prompt_completion(
                [{"role": "user", "content": u}, {"role": "assistant", "content": a}], tokenizer
            )
            for u, a in TRAIN
        )
    )
    seen = STEPS * BATCH
    trained_tokens = of_type(trained["events"], "result")[0]["trained_tokens"]
    assert sum(lengths[:seen]) <= trained_tokens <= sum(lengths[-seen:])
    assert trained_tokens <= len(TRAIN) * MAX_LENGTH * 3


def test_a_rerun_resumes_from_the_last_checkpoint(trained, base_checkpoint: Path, data: Path):
    """Same configuration, same data: the rerun picks up checkpoint-3, which already finished the steps."""
    root = trained["root"]
    output_dir = root / "rerun"
    shutil.copytree(
        trained["output_dir"], output_dir, ignore=shutil.ignore_patterns("adapter", "merged", "events.jsonl")
    )
    config = write_config(
        root / "rerun.json", **base_config(base_checkpoint, data, output_dir, eval_samples=0, merge=False)
    )
    result = run_trainer(config, cwd=root)
    assert result.returncode == 0, result.stderr[-4000:]
    events = read_events(output_dir)
    assert any(e["message"].startswith("resuming from checkpoint-3") for e in of_type(events, "message"))
    assert not of_type(events, "metrics")
    final = of_type(events, "result")[0]
    assert final["trained_tokens"] == 0 and final["merged_dir"] is None
    evaluation = of_type(events, "evaluation")[0]["data"]
    first = of_type(trained["events"], "evaluation")[0]["data"]
    assert evaluation["samples"] == []
    # The tuned adapter was loaded from the checkpoint: the same validation loss as at the end of the first run.
    assert evaluation["valid_loss_after"] == pytest.approx(first["valid_loss_after"], abs=1e-3)


# SmolLM2's template with `{% generation %}` markers around each assistant reply and its end-of-turn token.
MARKED_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_a_template_with_generation_markers_trains_on_every_assistant_turn(
    base_checkpoint: Path, tmp_path: Path
):
    model_dir = tmp_path / "marked-model"
    model_dir.mkdir()
    for source in base_checkpoint.iterdir():
        if source.name != "chat_template.jinja":
            (model_dir / source.name).symlink_to(source)
    (model_dir / "chat_template.jinja").write_text(MARKED_TEMPLATE)
    train = tmp_path / "train.jsonl"
    with train.open("w", encoding="utf-8") as handle:
        for (q1, a1), (q2, a2) in zip(TRAIN[0::2], TRAIN[1::2], strict=True):
            messages = [
                {"role": "user", "content": q1},
                {"role": "assistant", "content": a1},
                {"role": "user", "content": q2},
                {"role": "assistant", "content": a2},
            ]
            handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    output_dir = tmp_path / "out"
    config = write_config(
        tmp_path / "config.json",
        **base_config(
            model_dir,
            tmp_path,
            output_dir,
            train_file=str(train),
            validation_file=None,
            max_steps=2,
            eval_samples=1,
            merge=False,
        ),
    )
    result = run_trainer(config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    events = read_events(output_dir)
    messages = [e["message"] for e in of_type(events, "message")]
    assert "masking: assistant tokens only via the chat template's generation markers" in messages
    assert [e["data"]["step"] for e in of_type(events, "metrics")] == [1, 2]
    final = of_type(events, "result")[0]
    assert (
        final["masking"] == "assistant_only" and final["merged_dir"] is None and final["trained_tokens"] > 0
    )
    evaluation = of_type(events, "evaluation")[0]["data"]
    assert evaluation["valid_loss_before"] is None and evaluation["valid_loss_after"] is None
    assert [s["instruction"] for s in evaluation["samples"]] == [TRAIN[-1][0]]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_training_promptly(base_checkpoint: Path, data: Path, tmp_path: Path):
    output_dir = tmp_path / "out"
    config = write_config(
        tmp_path / "config.json",
        **base_config(
            base_checkpoint, data, output_dir, validation_file=None, max_steps=None, eval_samples=0
        ),
    )
    log = (tmp_path / "stderr.log").open("w")
    process = subprocess.Popen(
        trainer_command(config), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while not of_type(read_events(output_dir), "metrics"):
            assert process.poll() is None, (tmp_path / "stderr.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no training step within 300 s"
            time.sleep(0.2)
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
        assert time.monotonic() - stopped < 5
        assert returncode != 0
        assert not _group_alive(process.pid), "the trainer left a process behind"
        assert not of_type(read_events(output_dir), "result")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_a_broken_base_model_is_an_error_event(data: Path, tmp_path: Path, base_checkpoint: Path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    output_dir = tmp_path / "out"
    config = write_config(tmp_path / "config.json", **base_config(broken, data, output_dir))
    result = run_trainer(config, cwd=tmp_path, timeout=300)
    assert result.returncode == 1
    events = read_events(output_dir)
    assert events[-1]["type"] == "error" and ": " in events[-1]["message"]
    assert not of_type(events, "result")
    assert "Traceback" in result.stderr


def test_an_invalid_config_is_an_error_event(data: Path, tmp_path: Path, base_checkpoint: Path):
    output_dir = tmp_path / "out"
    config = write_config(
        tmp_path / "config.json", **base_config(base_checkpoint, data, output_dir), epochs=3
    )
    result = run_trainer(config, cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    events = read_events(output_dir)
    assert len(events) == 1 and events[0]["type"] == "error"
    assert events[0]["message"].startswith("ValidationError: ")
