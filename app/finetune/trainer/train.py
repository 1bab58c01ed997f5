"""One training run: TRL's SFTTrainer with a PEFT LoRA adapter, loss on assistant tokens only.

The timed part is `trainer.train()` and nothing else: evaluation of the base and tuned model, sample answers,
saving and merging happen before or after it, and the per-step callback only reads the logs the Trainer makes
anyway. That keeps speed and memory next to a plain TRL script's (bench/finetune_bench.py checks it).
Sequences are truncated to max_length and never packed, so the token count (attention-mask ones, as TRL counts
them) is exactly what the model saw.
"""

from __future__ import annotations

import json
import math
import re
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.utils import logging as transformers_logging
from trl import SFTConfig, SFTTrainer

from app.finetune.trainer.config import TrainerConfig
from app.finetune.trainer.events import EventWriter
from app.finetune.trainer.masking import (
    ASSISTANT_ONLY,
    check_assistant_masking,
    clean_messages,
    last_instruction,
    prompt_messages,
    to_prompt_completion,
)

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
FINGERPRINT_FILE = "trainer-fingerprint.json"
# Every linear layer of the blocks (not lm_head): the usual choice for SFT, and all of them are LoRA modules
# vLLM can serve.
LORA_TARGETS = "all-linear"
MAX_NEW_TOKENS = 64
# Precision: float32 weights (and LoRA master weights); matmuls in bf16 autocast where the hardware computes
# bf16 natively (AVX512-BF16 or AMX on the CPU), else float32. Measured here (2 cores with AVX512-BF16,
# SmolLM2-135M, LoRA r=16, batch 4, 8 steps, 1 thread, alternating): bf16 76 tokens/s vs float32 45 (x1.7),
# peak RSS 2.8 vs 3.3 GB, per-step losses within 0.5% of float32. Without native bf16 it is emulated, and slower.
# Gradient checkpointing (TRL's default) recomputes activations in the backward pass. Measured as above (float32):
# off was x1.4 faster but peaked at 5.5-5.8 GB instead of 3.3 GB. The trainer shares its machine with the service
# and often a model server, so memory wins: it stays on.
GRADIENT_CHECKPOINTING = True
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def use_bf16() -> bool:
    """bf16 autocast only where the hardware does bf16 natively (see the measurements above)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    native = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in native)


def read_conversations(path: str) -> list[list[dict[str, str]]]:
    """The `messages` of each line of an OpenAI chat JSONL file (validated by the runner before)."""
    conversations = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                conversations.append(clean_messages(json.loads(line)["messages"]))
    return conversations


def build_dataset(conversations: list[list[dict[str, str]]], tokenizer: Any, mode: str) -> Dataset:
    """Conversational rows for assistant-only loss; prompt-completion rows for the completion-only fallback."""
    if mode == ASSISTANT_ONLY:
        return Dataset.from_list([{"messages": messages} for messages in conversations])
    return Dataset.from_list([to_prompt_completion(messages, tokenizer) for messages in conversations])


def sft_config(config: TrainerConfig, mode: str, has_validation: bool, bf16: bool) -> SFTConfig:
    """The Trainer's arguments: one log per step, checkpoints per epoch (or every save_steps), no reporters."""
    strategy = "epoch" if config.save_steps is None else "steps"
    return SFTConfig(
        output_dir=config.output_dir,
        num_train_epochs=config.n_epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=config.learning_rate,
        seed=config.seed,
        max_length=config.max_length,
        packing=False,
        padding_free=False,
        assistant_only_loss=mode == ASSISTANT_ONLY,
        completion_only_loss=mode != ASSISTANT_ONLY,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),  # also what lets bf16 autocast run on the CPU
        gradient_checkpointing=GRADIENT_CHECKPOINTING,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy=strategy,
        save_steps=config.save_steps or 500,
        eval_strategy=strategy if has_validation else "no",
        eval_steps=config.save_steps,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for child in output_dir.iterdir() if output_dir.is_dir() else []:
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def prepare_output_dir(config: TrainerConfig, events: EventWriter) -> str | None:
    """The checkpoint to resume from, if any; checkpoints that cannot be resumed are removed.

    A checkpoint is resumable when `resume` is on, it is complete (the Trainer writes trainer_state.json last)
    and the earlier run had the same fingerprint (training fields and data bytes). Anything else would mix two
    runs' checkpoints in one directory.
    """
    output_dir = Path(config.output_dir)
    fingerprint = config.fingerprint()
    marker = output_dir / FINGERPRINT_FILE
    try:
        same_run = json.loads(marker.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError, AttributeError):
        same_run = False
    checkpoints = _checkpoints(output_dir)
    complete = [(step, path) for step, path in checkpoints if (path / "trainer_state.json").is_file()]
    resume = complete[-1] if complete and config.resume and same_run else None
    stale = [
        path
        for step, path in checkpoints
        if resume is None or step > resume[0] or (step, path) not in complete
    ]
    if resume is not None:
        events.message(f"resuming from {resume[1].name} of an earlier run of this configuration")
    if stale:
        if resume is not None:
            why = "incomplete"
        elif not config.resume:
            why = "resume is off"
        else:
            why = "a different configuration or data"
        events.message(f"removing {len(stale)} checkpoint(s) of an earlier run ({why})", level="warn")
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": fingerprint}))
    return str(resume[1]) if resume is not None else None


class EventCallback(TrainerCallback):
    """Turns the Trainer's logs into metrics and checkpoint events.

    A step's training log is held back until the step's evaluation (if any) has been logged, so one metrics
    event carries both train_loss and valid_loss; it is written at the next step's start, at a save, or at the
    end. Logs outside train() (the evaluations before and after) are not metrics events.
    """

    def __init__(self, events: EventWriter) -> None:
        self.events = events
        self.training = False
        self.pending: dict[str, Any] | None = None
        self.latest: dict[str, Any] = {}
        self.num_tokens = 0
        self._step_started = time.perf_counter()
        self._tokens_at_start = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True
        self._step_started = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._flush()
        self._step_started = time.perf_counter()
        self._tokens_at_start = self.num_tokens

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.training or not logs:
            return
        if "loss" in logs:
            self._flush()
            elapsed = max(time.perf_counter() - self._step_started, 1e-9)
            self.num_tokens = int(logs.get("num_tokens", self.num_tokens))
            data = {
                "step": state.global_step,
                "total_steps": state.max_steps,
                "epoch": float(logs.get("epoch", state.epoch or 0.0)),
                "train_loss": float(logs["loss"]),
                "learning_rate": float(logs.get("learning_rate", 0.0)),
                "tokens_per_s": round((self.num_tokens - self._tokens_at_start) / elapsed, 2),
            }
            if "mean_token_accuracy" in logs:
                data["train_mean_token_accuracy"] = float(logs["mean_token_accuracy"])
            self.pending = data
        elif "eval_loss" in logs and self.pending is not None and self.pending["step"] == state.global_step:
            self.pending["valid_loss"] = float(logs["eval_loss"])

    def on_save(self, args, state, control, **kwargs):
        self._flush()
        name = f"checkpoint-{state.global_step}"
        if (Path(args.output_dir) / name).is_dir():
            self.events.checkpoint(state.global_step, name, dict(self.latest))

    def on_train_end(self, args, state, control, **kwargs):
        self._flush()
        self.training = False

    def _flush(self) -> None:
        if self.pending is not None:
            self.events.metrics(self.pending)
            self.latest, self.pending = self.pending, None


@torch.inference_mode()
def generate_answers(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]]) -> list[str]:
    """Greedy answers to each conversation's prompt (the messages before its last assistant reply)."""
    was_training = model.training
    model.eval()
    answers = []
    for messages in conversations:
        inputs = tokenizer.apply_chat_template(
            prompt_messages(messages), add_generation_prompt=True, return_dict=True, return_tensors="pt"
        ).to(model.device)
        output = model.generate(
            **inputs,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
        )
        answers.append(
            tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        )
    model.train(was_training)
    return answers


def _global_step(checkpoint: str) -> int:
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])


def _eval_loss(trainer: SFTTrainer) -> float | None:
    loss = trainer.evaluate().get("eval_loss")
    return float(loss) if loss is not None else None


def run(config: TrainerConfig, events: EventWriter) -> None:
    """Train, evaluate, save the adapter (and the merged model); every outcome is an event."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    transformers_logging.disable_progress_bar()
    output_dir = Path(config.output_dir)

    events.message("loading base model")
    base_dtype = getattr(AutoConfig.from_pretrained(config.base_model), "dtype", None)
    if isinstance(base_dtype, str):
        base_dtype = getattr(torch, base_dtype, None)
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(config.base_model, dtype=torch.float32)

    check = check_assistant_masking(tokenizer)
    if check.assistant_only and check.template is None:
        events.message("masking: assistant tokens only via the chat template's generation markers")
    elif check.assistant_only:
        events.message("masking: assistant tokens only via TRL's training version of the chat template")
    else:
        events.message(
            f"{check.reason}; falling back to completion-only loss on the last assistant turn", level="warn"
        )

    train_conversations = read_conversations(config.train_file)
    valid_conversations = read_conversations(config.validation_file) if config.validation_file else []
    train_dataset = build_dataset(train_conversations, tokenizer, check.mode)
    eval_dataset = build_dataset(valid_conversations, tokenizer, check.mode) if valid_conversations else None
    if valid_conversations:
        samples = valid_conversations[: config.eval_samples]
    else:  # nothing held out: the last training examples (seen in training, so a weaker comparison)
        samples = train_conversations[max(0, len(train_conversations) - config.eval_samples) :]

    bf16 = use_bf16()
    events.message("precision: bf16 autocast, float32 weights" if bf16 else "precision: float32")
    resume_from = prepare_output_dir(config, events)
    callback = EventCallback(events)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(config, check.mode, eval_dataset is not None, bf16),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=LORA_TARGETS,
            task_type="CAUSAL_LM",
        ),
        callbacks=[callback],
    )
    examples = len(trainer.train_dataset)
    if examples < len(train_conversations):
        events.message(
            f"{len(train_conversations) - examples} example(s) left out: nothing to learn within max_length "
            f"{config.max_length}",
            level="warn",
        )
    if examples == 0:
        raise ValueError("no training example has an assistant token within max_length")
    steps = config.n_epochs * math.ceil(examples / config.batch_size)
    if config.max_steps is not None and config.max_steps < steps:
        steps = config.max_steps
        trainer.args.max_steps = steps  # a cap only: a larger max_steps would make the Trainer add epochs
    events.message(f"training {examples} examples, {steps} steps")

    valid_loss_before = None
    base_answers: list[str] = []
    if eval_dataset is not None or samples:
        events.message("evaluating the base model")
        if eval_dataset is not None:
            valid_loss_before = _eval_loss(trainer)  # LoRA's B starts at zero: this is the base model
        with trainer.model.disable_adapter():
            base_answers = generate_answers(trainer.model, tokenizer, samples)

    started = time.perf_counter()
    if resume_from is not None and _global_step(resume_from) >= steps:
        # The Trainer would run one more step past max_steps when resuming at it: load the adapter instead.
        events.message(f"{Path(resume_from).name} already completed the {steps} steps; using its adapter")
        set_peft_model_state_dict(
            trainer.model, load_file(str(Path(resume_from) / "adapter_model.safetensors"))
        )
    else:
        trainer.train(resume_from_checkpoint=resume_from)
    train_runtime = time.perf_counter() - started
    trained_tokens = callback.num_tokens

    valid_loss_after = None
    tuned_answers: list[str] = []
    if eval_dataset is not None or samples:
        events.message("evaluating the tuned model")
        if eval_dataset is not None:
            valid_loss_after = _eval_loss(trainer)
        tuned_answers = generate_answers(trainer.model, tokenizer, samples)

    events.message("saving adapter")
    adapter_dir = output_dir / ADAPTER_DIR
    shutil.rmtree(adapter_dir, ignore_errors=True)
    trainer.model.save_pretrained(str(adapter_dir))

    merged_dir = None
    if config.merge:
        events.message("merging the adapter into the base model")
        merged_dir = output_dir / MERGED_DIR
        shutil.rmtree(merged_dir, ignore_errors=True)
        merged = trainer.model.merge_and_unload()
        if isinstance(base_dtype, torch.dtype):
            merged = merged.to(base_dtype)
        merged.config.use_cache = True
        merged.save_pretrained(str(merged_dir))
        tokenizer.save_pretrained(str(merged_dir))

    events.evaluation(
        valid_loss_before,
        valid_loss_after,
        [
            {"instruction": last_instruction(messages), "base": base, "tuned": tuned}
            for messages, base, tuned in zip(samples, base_answers, tuned_answers, strict=True)
        ],
    )
    events.result(
        adapter_dir=ADAPTER_DIR,
        merged_dir=MERGED_DIR if merged_dir is not None else None,
        trained_tokens=trained_tokens,
        masking=check.mode,
        train_runtime_s=round(train_runtime, 3),
        tokens_per_s=round(trained_tokens / train_runtime, 2) if train_runtime > 0 else 0.0,
        # The process's peak resident memory (Linux reports KiB): what a job's memory needs are read from.
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
