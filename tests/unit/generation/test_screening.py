"""What a reply yields before the accept step: candidates with heuristic verdicts, clean text, a clipped log."""

from __future__ import annotations

import json

from app.generation.filters import FilterConfig
from app.generation.pipeline.requests import LLMRequest
from app.generation.pipeline.screening import failed_reply, screen_reply
from app.llm.base import Choice, Reply, SamplingParams

CHAT = LLMRequest(number=3, mode="chat", languages=("en",), sampling=SamplingParams())


def tasks(*instructions: str) -> str:
    return json.dumps(
        {"tasks": [{"instruction": i, "input": "", "output": "An answer."} for i in instructions]}
    )


def test_candidates_keep_their_heuristic_verdict_and_counts_add_up() -> None:
    text = tasks("Describe the water cycle in three sentences.", "Draw a picture of a cat for me.", "Hi")
    reply = Reply(
        [Choice(text=text, finish_reason="stop"), Choice(text="not json at all", finish_reason="stop")],
        10,
        20,
    )
    screened = screen_reply(CHAT, reply, FilterConfig(), log_chars=1000, latency_ms=5.0)
    assert [c.reason for c in screened.candidates] == [None, "blocklisted_keyword", "instruction_too_short"]
    assert screened.raw == 4  # three parsed items and one unparsed reply
    assert [c["items"] for c in screened.choices] == [3, 0] and screened.choices[1]["unparsed"] == 1
    assert (screened.prompt_tokens, screened.completion_tokens) == (10, 20)
    # A choice from which no item could be read makes the request count as failed, saying why.
    assert screened.error == "of 2 choice(s), 1 held no readable item"


def test_a_reply_that_yields_items_is_no_error() -> None:
    reply = Reply([Choice(text=tasks("Describe the water cycle in three sentences."), finish_reason="stop")])
    assert screen_reply(CHAT, reply, FilterConfig(), log_chars=1000, latency_ms=1.0).error is None


def test_an_empty_or_blank_reply_is_an_error() -> None:
    for text in ("", "  \n "):
        screened = screen_reply(
            CHAT, Reply([Choice(text=text)]), FilterConfig(), log_chars=100, latency_ms=1.0
        )
        assert screened.error == "of 1 choice(s), 1 came back without text (content: null or empty)"
        assert screened.candidates == [] and screened.raw == 0


def test_model_text_is_cleaned_before_anything_keeps_it() -> None:
    text = tasks("Explain\u0000 why the sky is blue \ud800 to a child.")
    screened = screen_reply(CHAT, Reply([Choice(text=text)]), FilterConfig(), log_chars=1000, latency_ms=1.0)
    instruction = screened.candidates[0].item.instruction
    assert "\x00" not in instruction and "\ud800" not in instruction and "\ufffd" in instruction
    assert "\x00" not in screened.choices[0]["text"]


def test_a_choice_without_text_makes_the_request_an_error_and_logs_are_clipped() -> None:
    reply = Reply([Choice(text=None), Choice(text=tasks("Name three rivers in Europe please.") + " " * 50)])
    screened = screen_reply(CHAT, reply, FilterConfig(), log_chars=20, latency_ms=1.0)
    assert screened.error is not None and "content: null" in screened.error
    assert len(screened.candidates) == 1
    assert screened.choices[1]["truncated"] is True and len(screened.choices[1]["text"]) == 20
    failed = failed_reply(CHAT, "HTTP 400: prompt too long\x00", latency_ms=2.0)
    assert failed.error == "HTTP 400: prompt too long" and failed.number == 3 and failed.prompts == 1
