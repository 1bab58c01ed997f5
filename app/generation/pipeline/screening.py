"""What one reply yielded: parsed candidates, each with its heuristic verdict, and a clipped log of the raw text.

A reply counts as failed (the job's error counter) when a choice has no text, or text from which not one item
could be read. Pure and cheap: it runs as each reply arrives, before the accept step (which deduplicates and stores).
Model output is untrusted: every text is cleaned (`storable`) here, once, before anything keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.text import clip, storable
from app.generation.candidates import CandidateItem
from app.generation.filters import FilterConfig, check_candidate
from app.generation.parsing import parse_json_tasks, parse_numbered_tasks
from app.generation.pipeline.requests import LLMRequest
from app.llm.base import Reply


@dataclass(frozen=True, slots=True)
class Candidate:
    item: CandidateItem
    reason: str | None  # a heuristic filter's reason code, or None when it passed them all


@dataclass(slots=True)
class ScreenedReply:
    """One request's outcome, ready for the accept step. `error` is set when the request counts as failed."""

    number: int
    prompts: int
    candidates: list[Candidate] = field(default_factory=list)
    raw: int = 0  # chunks the model wrote: parsed items + unparsed chunks
    choices: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0


def screen_reply(
    request: LLMRequest, reply: Reply, filters: FilterConfig, *, log_chars: int, latency_ms: float
) -> ScreenedReply:
    screened = ScreenedReply(
        number=request.number,
        prompts=request.prompt_count,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        latency_ms=latency_ms,
    )
    empty = malformed = 0
    for choice in reply.choices:
        if choice.text is None or not choice.text.strip():
            empty += 1
            screened.choices.append(
                {
                    "prompt_index": choice.prompt_index,
                    "text": None,
                    "finish_reason": choice.finish_reason,
                    "items": 0,
                    "unparsed": 0,
                }
            )
            continue
        text = storable(choice.text)
        if request.mode == "completions":
            result = parse_numbered_tasks(
                text, finish_reason=choice.finish_reason, first_index=request.first_index
            )
        else:
            result = parse_json_tasks(text, finish_reason=choice.finish_reason)
        for item in result.items:
            clean = CandidateItem(storable(item.instruction), storable(item.input), storable(item.output))
            reason = check_candidate(clean, filters)
            screened.candidates.append(Candidate(clean, None if reason is None else str(reason)))
        screened.raw += len(result.items) + result.unparsed
        malformed += not result.items  # text, but not one item could be read from it
        logged, truncated = clip(text, log_chars)
        screened.choices.append(
            {
                "prompt_index": choice.prompt_index,
                "text": logged,
                "truncated": truncated,
                "finish_reason": choice.finish_reason,
                "items": len(result.items),
                "unparsed": result.unparsed,
            }
        )
    problems = []
    if empty:
        problems.append(f"{empty} came back without text (content: null or empty)")
    if malformed:
        problems.append(f"{malformed} held no readable item")
    if problems:
        screened.error = f"of {len(reply.choices)} choice(s), " + " and ".join(problems)
    elif not reply.choices:
        screened.error = "the server returned no choices"
    return screened


def failed_reply(request: LLMRequest, error: str, *, latency_ms: float) -> ScreenedReply:
    return ScreenedReply(
        number=request.number, prompts=request.prompt_count, error=storable(error), latency_ms=latency_ms
    )
