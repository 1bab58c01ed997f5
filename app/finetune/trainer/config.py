"""The trainer's configuration: the JSON file the job runner writes and the trainer process reads.

Strict and closed (extra="forbid", no string-to-number coercion): a typo or a field the trainer does not know
is an error before minutes of model loading, not a silently ignored setting. Pure pydantic, so the runner can
import it without torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Fields that change what is trained (and so whether an earlier run's checkpoints can be resumed). Threads,
# checkpoint cadence, evaluation samples, merging and `resume` itself do not.
_TRAINING_FIELDS = (
    "base_model",
    "n_epochs",
    "batch_size",
    "learning_rate",
    "seed",
    "max_length",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "max_steps",
)


class TrainerConfig(BaseModel):
    """One training run. Paths are absolute: the process may be started from any working directory."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    base_model: str = Field(min_length=1, description="Hugging Face checkpoint directory")
    train_file: str = Field(min_length=1, description="OpenAI chat JSONL")
    validation_file: str | None = None
    output_dir: str = Field(min_length=1, description="work directory: events, checkpoints, adapter, merged")
    n_epochs: int = Field(3, ge=1, le=100)
    batch_size: int = Field(4, ge=1, le=1024)
    learning_rate: float = Field(2e-4, gt=0, le=1)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    max_length: int = Field(512, ge=8, le=131072)
    lora_r: int = Field(16, ge=1, le=1024)
    lora_alpha: int | float = Field(32, gt=0, le=65536)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps (quick runs)")
    threads: int | None = Field(
        None, ge=1, le=1024, description="torch.set_num_threads; None: torch's default"
    )
    save_steps: int | None = Field(
        None, ge=1, description="checkpoint every N steps; None: at each epoch's end"
    )
    eval_samples: int = Field(3, ge=0, le=100)
    merge: bool = True
    resume: bool = True

    @field_validator("base_model", "train_file", "validation_file", "output_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_absolute():
            raise ValueError("must be an absolute path")
        return value

    def fingerprint(self) -> str:
        """What identifies "the same training": the fields that shape it and the bytes of the data files."""
        digest = hashlib.sha256()
        digest.update(
            json.dumps({name: getattr(self, name) for name in _TRAINING_FIELDS}, sort_keys=True).encode()
        )
        for path in (self.train_file, self.validation_file):
            digest.update(b"\0")
            if path is not None:
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
        return digest.hexdigest()


def load_config(path: str | Path) -> TrainerConfig:
    """Parse and validate the config file (a pydantic ValidationError names the offending field)."""
    return TrainerConfig.model_validate_json(Path(path).read_bytes())
