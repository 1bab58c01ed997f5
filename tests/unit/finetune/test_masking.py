"""The pre-flight masking check and the completion-only fallback, on a small tokenizer built in the test.

The tokenizer is a byte-level BPE trained here on a few sentences (offline, milliseconds), with ChatML's special
tokens; the chat templates are swapped in to exercise both branches.
"""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from app.finetune.trainer.masking import (  # noqa: E402
    ASSISTANT_ONLY,
    COMPLETION_ONLY,
    check_assistant_masking,
    last_instruction,
    prompt_messages,
    to_prompt_completion,
)

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_WITH_MARKERS = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Markers in the wrong place: the whole conversation is "generated", user turns included.
CHATML_MARKING_EVERYTHING = "{% generation %}" + CHATML + "{% endgeneration %}"


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [
        "Translate into English: good morning, thank you very much",
        "user assistant system 你好 谢谢",
    ] * 5
    backend.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )


@pytest.fixture
def with_template(tokenizer):
    original = tokenizer.chat_template

    def use(template):
        tokenizer.chat_template = template
        return tokenizer

    yield use
    tokenizer.chat_template = original


def test_template_without_markers_falls_back(with_template):
    check = check_assistant_masking(with_template(CHATML))
    assert check.mode == COMPLETION_ONLY and not check.assistant_only
    assert "generation markers" in check.reason


def test_template_with_markers_masks_assistant_tokens(with_template):
    check = check_assistant_masking(with_template(CHATML_WITH_MARKERS))
    assert check.mode == ASSISTANT_ONLY and check.assistant_only
    assert check.template is None  # the tokenizer's own template is used as it is


def test_markers_that_cover_user_turns_are_refused(with_template):
    check = check_assistant_masking(with_template(CHATML_MARKING_EVERYTHING))
    assert check.mode == COMPLETION_ONLY
    assert "non-assistant" in check.reason


def test_broken_or_missing_template_falls_back(with_template):
    assert (
        check_assistant_masking(with_template("{% for m in messages %}{{ m.content ")).mode == COMPLETION_ONLY
    )
    assert check_assistant_masking(with_template(None)).mode == COMPLETION_ONLY


def test_a_template_trl_knows_gets_its_training_version(with_template):
    """Qwen2.5's template has no markers, but TRL ships a marked-up copy that SFTTrainer swaps in."""
    pytest.importorskip("trl")
    from trl.chat_template_utils import qwen2_5_chat_template, qwen2_5_training_chat_template

    check = check_assistant_masking(with_template(qwen2_5_chat_template))
    assert check.mode == ASSISTANT_ONLY
    assert check.template == qwen2_5_training_chat_template


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "翻译成英文：你好"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "翻译成英文：谢谢"},
    {"role": "assistant", "content": "Thank you", "weight": 1},
]


def test_prompt_completion_takes_the_last_assistant_turn(with_template):
    tokenizer = with_template(CHATML)
    pair = to_prompt_completion(CONVERSATION, tokenizer)
    assert pair["completion"] == "Thank you<|im_end|>"
    assert pair["prompt"] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n翻译成英文：你好<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n"
        "<|im_start|>user\n翻译成英文：谢谢<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # Prompt + completion is the conversation as the template renders it (less the newline after the last turn).
    full = tokenizer.apply_chat_template(
        [{k: m[k] for k in ("role", "content")} for m in CONVERSATION], tokenize=False
    )
    assert full.rstrip("\n") == pair["prompt"] + pair["completion"]


def test_turns_after_the_last_reply_are_dropped(with_template):
    tokenizer = with_template(CHATML)
    pair = to_prompt_completion(CONVERSATION[:3] + [{"role": "user", "content": "more?"}], tokenizer)
    assert pair["completion"] == "Hello<|im_end|>"
    assert "more?" not in pair["prompt"]


def test_a_conversation_without_a_reply_is_refused(with_template):
    with pytest.raises(ValueError, match="no assistant"):
        to_prompt_completion(CONVERSATION[:2], with_template(CHATML))


def test_prompt_messages_and_instruction():
    assert prompt_messages(CONVERSATION) == [{k: m[k] for k in ("role", "content")} for m in CONVERSATION[:4]]
    assert last_instruction(CONVERSATION) == "翻译成英文：谢谢"
    assert last_instruction([{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]) == ""
