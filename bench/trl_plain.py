"""Plain TRL SFT + PEFT LoRA: the baseline bench/finetune_bench.py measures the Sprout trainer against.

As little as a fine-tuning script can be: `datasets` loads the chat JSONL, SFTTrainer trains a LoRA adapter with
the same settings the Sprout trainer uses (float32 weights, bf16 autocast when --bf16 says the trainer picks it,
gradient checkpointing, LoRA on every linear layer, no packing, truncation to max_length, one log per step,
loss on assistant tokens only: TRL's assistant_only_loss when the chat template has `{% generation %}` markers
(or TRL ships a marked-up version of it), else completion-only loss on the last assistant turn, the fallback
of app/finetune/trainer/masking.py).
No checkpoints, evaluation or merging.

Prints one JSON line: trained_tokens (attention-mask ones, as TRL counts them), train_runtime_s (the
trainer.train() call), tokens_per_s, peak_rss_mb.

    .venv/bin/python bench/trl_plain.py --model CHECKPOINT_DIR --data train.jsonl [--epochs 1 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=float, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (float32 otherwise)")
    args = parser.parse_args()

    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from trl.chat_template_utils import get_training_chat_template

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    dataset = load_dataset("json", data_files=args.data, split="train")
    try:  # markers in the template, or a marked-up version TRL ships for it: assistant-only loss works
        get_training_chat_template(tokenizer)
        assistant_only = True
    except ValueError:
        assistant_only = False
    if not assistant_only:

        def prompt_completion(row):
            messages = row["messages"]
            last = max(i for i, message in enumerate(messages) if message["role"] == "assistant")
            prompt = tokenizer.apply_chat_template(
                messages[:last], tokenize=False, add_generation_prompt=True
            )
            return {"prompt": prompt, "completion": messages[last]["content"] + tokenizer.eos_token}

        dataset = dataset.map(prompt_completion, remove_columns=dataset.column_names)

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(
                output_dir=output_dir,
                num_train_epochs=args.epochs,
                per_device_train_batch_size=args.batch_size,
                learning_rate=args.lr,
                seed=args.seed,
                max_length=args.max_length,
                packing=False,
                assistant_only_loss=assistant_only,
                completion_only_loss=not assistant_only,
                bf16=args.bf16,
                use_cpu=not torch.cuda.is_available(),
                gradient_checkpointing=True,
                logging_steps=1,
                save_strategy="no",
                report_to="none",
                disable_tqdm=True,
                dataloader_num_workers=0,
                dataloader_pin_memory=False,
            ),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=LoraConfig(
                r=args.lora_r,
                lora_alpha=args.lora_alpha,
                lora_dropout=args.lora_dropout,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
        started = time.perf_counter()
        trainer.train()
        runtime = time.perf_counter() - started
    tokens = max(
        (int(log["num_tokens"]) for log in trainer.state.log_history if "num_tokens" in log), default=0
    )
    print(
        json.dumps(
            {
                "trained_tokens": tokens,
                "train_runtime_s": round(runtime, 3),
                "tokens_per_s": round(tokens / runtime, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
