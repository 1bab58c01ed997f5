"""Which tokens carry the loss: the assistant's, decided before training starts.

TRL's `assistant_only_loss` needs a chat template with `{% generation %}` markers; on a template without them
it fails (or, in older versions, silently trains on nothing: QwenLM/Qwen3#1522). So the template is probed
first by rendering a small conversation with `return_assistant_tokens_mask=True`: the mask must be non-empty,
cover every assistant reply and none of the user's words. If it does not, each conversation becomes a
prompt-completion pair (everything before the last assistant message, rendered with the generation prompt ->
that message + EOS), and training uses TRL's completion-only loss: still only assistant tokens, but only the
last turn's. Pure functions of a tokenizer: no model needed, so unit tests use a tokenizer alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ASSISTANT_ONLY = "assistant_only"
COMPLETION_ONLY = "completion_only"

_PROBE = [
    {"role": "system", "content": "You translate."},
    {"role": "user", "content": "Translate into English: 早上好"},
    {"role": "assistant", "content": "Good morning to you"},
    {"role": "user", "content": "And this one: 谢谢"},
    {"role": "assistant", "content": "Thank you very much"},
]


@dataclass(frozen=True)
class MaskingCheck:
    """The outcome of the probe: `mode` is ASSISTANT_ONLY or COMPLETION_ONLY; `reason` says why, for the log.

    `template` is set when the tokenizer's own template has no markers but TRL ships a training version of it
    (Qwen, Llama 3, Gemma... families) that passes the probe; SFTTrainer swaps that version in by itself.
    """

    mode: str
    reason: str
    template: str | None = None

    @property
    def assistant_only(self) -> bool:
        return self.mode == ASSISTANT_ONLY


def check_assistant_masking(tokenizer: Any) -> MaskingCheck:
    """Probe the tokenizer's chat template, then TRL's training version of it, for a usable assistant mask."""
    problem = _probe(tokenizer, None)
    if problem is None:
        return MaskingCheck(
            ASSISTANT_ONLY, "the chat template's generation markers cover the assistant replies"
        )
    training = _trl_training_template(tokenizer)
    if training is not None and _probe(tokenizer, training) is None:
        return MaskingCheck(
            ASSISTANT_ONLY,
            "TRL's training version of the chat template marks the assistant replies",
            training,
        )
    return MaskingCheck(COMPLETION_ONLY, problem)


def _probe(tokenizer: Any, template: str | None) -> str | None:
    """None if rendering the probe marks exactly the assistant replies, else what is wrong."""
    if not (template or tokenizer.chat_template):
        return "the tokenizer has no chat template"
    try:
        rendered = tokenizer.apply_chat_template(
            _PROBE, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
    except Exception as exc:  # a template error of any kind means: cannot mark assistant tokens
        return f"rendering with an assistant mask failed: {type(exc).__name__}: {exc}"
    ids = list(rendered["input_ids"])
    mask = list(rendered.get("assistant_masks") or [])
    if len(mask) != len(ids) or not any(mask):
        return "the chat template has no generation markers"
    masked = tokenizer.decode([token for token, bit in zip(ids, mask, strict=True) if bit])
    missing = [m["content"] for m in _PROBE if m["role"] == "assistant" and m["content"] not in masked]
    if missing:
        return f"the assistant mask misses assistant text: {missing[0]!r}"
    leaked = [m["content"] for m in _PROBE if m["role"] != "assistant" and m["content"] in masked]
    if leaked:
        return f"the assistant mask covers non-assistant text: {leaked[0]!r}"
    return None


def _trl_training_template(tokenizer: Any) -> str | None:
    """TRL's marked-up version of a known template (the one SFTTrainer would use), or None."""
    try:
        from trl.chat_template_utils import get_training_chat_template

        return get_training_chat_template(tokenizer)
    except Exception:  # not a template TRL knows (ValueError), or no TRL here
        return None


def clean_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Role and content only: other keys (weight, name) are not part of what the template renders here."""
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def last_assistant_index(messages: list[dict[str, Any]]) -> int:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index]["role"] == "assistant":
            return index
    raise ValueError("the conversation has no assistant message")


def prompt_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The messages before the last assistant reply: what the model sees when it answers."""
    return clean_messages(messages[: last_assistant_index(messages)])


def last_instruction(messages: list[dict[str, Any]]) -> str:
    """The last user message before the last assistant reply (what a person asked), or "" if there is none."""
    for message in reversed(prompt_messages(messages)):
        if message["role"] == "user":
            return message["content"]
    return ""


def to_prompt_completion(messages: list[dict[str, Any]], tokenizer: Any) -> dict[str, str]:
    """The completion-only form of a conversation: rendered prompt (with the generation prompt) and reply + EOS.

    Turns after the last assistant reply, if any, are dropped: nothing would be learned from them.
    """
    index = last_assistant_index(messages)
    prompt = tokenizer.apply_chat_template(
        prompt_messages(messages), tokenize=False, add_generation_prompt=True
    )
    bos = tokenizer.bos_token
    if bos and prompt.startswith(bos) and _adds_bos(tokenizer):
        prompt = prompt[len(bos) :]  # TRL tokenizes the text with special tokens: BOS would come twice
    return {"prompt": prompt, "completion": str(messages[index]["content"]) + tokenizer.eos_token}


def _adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id
