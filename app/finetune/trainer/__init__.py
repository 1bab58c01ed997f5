"""The local fine-tuning trainer: TRL SFT + PEFT LoRA in a process of its own.

Run as `python -m app.finetune.trainer CONFIG_JSON_PATH`. It reads a `TrainerConfig` (config.py), trains, and
reports through `OUTPUT_DIR/events.jsonl` (events.py), one JSON object per line. A process of its own because
training holds the CPU and hundreds of MB for minutes: the service stays responsive, and stopping a job is a
signal to one process group. Importing this package pulls in pydantic only; torch and friends load in train.py.
"""
