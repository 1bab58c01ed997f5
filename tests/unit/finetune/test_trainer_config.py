"""The trainer's config file: closed, strict, bounded, and a fingerprint that decides what may be resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.finetune.trainer.config import TrainerConfig, load_config

BASE = {"base_model": "/models/base", "train_file": "/data/train.jsonl", "output_dir": "/work/job"}


def parse(**fields) -> TrainerConfig:
    return TrainerConfig.model_validate_json(json.dumps({**BASE, **fields}))


def test_defaults_follow_the_contract():
    config = parse()
    assert config.validation_file is None
    assert (config.n_epochs, config.batch_size, config.learning_rate, config.seed) == (3, 4, 2e-4, 42)
    assert (config.max_length, config.lora_r, config.lora_alpha, config.lora_dropout) == (512, 16, 32, 0.05)
    assert config.max_steps is None and config.threads is None and config.save_steps is None
    assert (config.eval_samples, config.merge, config.resume) == (3, True, True)


def test_the_full_contract_parses(tmp_path: Path):
    document = {
        **BASE,
        "validation_file": "/data/valid.jsonl",
        "n_epochs": 2,
        "batch_size": 8,
        "learning_rate": 1e-4,
        "seed": 7,
        "max_length": 256,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "max_steps": 10,
        "threads": 2,
        "save_steps": 5,
        "eval_samples": 0,
        "merge": False,
        "resume": False,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    assert load_config(path).model_dump() == document


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError, match="extra"):
        parse(epochs=3)


@pytest.mark.parametrize("field", ["base_model", "train_file", "output_dir"])
def test_required_fields(field: str):
    document = dict(BASE)
    del document[field]
    with pytest.raises(ValidationError, match=field):
        TrainerConfig.model_validate_json(json.dumps(document))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_epochs", 0),
        ("batch_size", 0),
        ("learning_rate", 0),
        ("learning_rate", -1e-4),
        ("max_length", 4),
        ("lora_r", 0),
        ("lora_alpha", 0),
        ("lora_dropout", 1.0),
        ("lora_dropout", -0.1),
        ("max_steps", 0),
        ("threads", 0),
        ("save_steps", 0),
        ("eval_samples", -1),
        ("seed", -1),
    ],
)
def test_bounds(field: str, value):
    with pytest.raises(ValidationError, match=field):
        parse(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"), [("n_epochs", "3"), ("n_epochs", 3.5), ("merge", "yes"), ("threads", "2")]
)
def test_no_coercion(field: str, value):
    with pytest.raises(ValidationError, match=field):
        parse(**{field: value})


@pytest.mark.parametrize("field", ["base_model", "train_file", "validation_file", "output_dir"])
def test_paths_must_be_absolute(field: str):
    with pytest.raises(ValidationError, match="absolute"):
        parse(**{field: "relative/path"})


def test_fingerprint_follows_training_fields_and_data(tmp_path: Path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"messages": []}\n')
    config = parse(train_file=str(train))
    same = config.fingerprint()
    assert (
        parse(train_file=str(train), threads=1, resume=False, merge=False, eval_samples=0).fingerprint()
        == same
    )
    assert parse(train_file=str(train), save_steps=3).fingerprint() == same
    assert parse(train_file=str(train), learning_rate=1e-3).fingerprint() != same
    assert parse(train_file=str(train), max_steps=5).fingerprint() != same
    train.write_text('{"messages": [1]}\n')
    assert config.fingerprint() != same
