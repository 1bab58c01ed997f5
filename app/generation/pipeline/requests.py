"""What each request of a job asks for: pure functions of (job parameters, seed tasks, job seed, request number).

Request number r of a job always samples the same examples, in the same language (and, when the caller gave a
seed, sends the model the same sampling seed), whatever happened before it: a resumed job skips the numbers it has stored and goes on with new ones, so it
never sends a prompt it already paid for, and two runs of a job with the same seed ask the same questions.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from app.generation.candidates import TaskExample
from app.generation.params import ResolvedParams
from app.generation.parsing import tasks_json_schema
from app.generation.prompting import (
    Language,
    choose_language,
    completion_stop_sequences,
    next_index,
    render_chat_messages,
    render_completion_prompt,
)
from app.generation.templates import PromptTemplates
from app.llm.base import ChatMessage, SamplingParams

Mode = Literal["chat", "completions"]


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """The shape every request of one job shares."""

    mode: Mode
    num_examples: int
    tasks_per_prompt: int
    prompts_per_request: int  # 1 in chat mode: one conversation per request
    language: Literal["auto", "en", "zh"]
    sampling: SamplingParams  # its seed is replaced per request
    seed_the_model: bool = False  # send each request's sampling seed to the server

    @classmethod
    def of(cls, params: ResolvedParams) -> RequestSpec:
        return cls(
            mode=params.mode,
            num_examples=params.num_examples,
            tasks_per_prompt=params.tasks_per_prompt,
            prompts_per_request=params.prompts_per_request,
            language=params.language,
            sampling=params.sampling(),
            seed_the_model=params.seed_the_model,
        )

    @property
    def sequences_per_request(self) -> int:
        """What one request adds to the server's batch: prompts x choices."""
        return self.prompts_per_request * self.sampling.n


@dataclass(frozen=True, slots=True)
class LLMRequest:
    number: int
    mode: Mode
    languages: tuple[Language, ...]
    sampling: SamplingParams
    prompts: tuple[str, ...] = ()  # completions mode
    messages: tuple[ChatMessage, ...] = ()  # chat mode
    json_schema: dict[str, Any] | None = None  # chat mode
    first_index: int = 1  # the number of the first item the model writes (completions mode)

    @property
    def prompt_count(self) -> int:
        return len(self.prompts) if self.mode == "completions" else 1

    @property
    def sequences(self) -> int:
        return self.prompt_count * self.sampling.n


def request_numbers(done: set[int] | frozenset[int]) -> Iterator[int]:
    """0, 1, 2, ... without the numbers a job already stored."""
    number = 0
    while True:
        if number not in done:
            yield number
        number += 1


def _rng(job_seed: int, number: int) -> random.Random:
    # A string seed goes through SHA-512: the same stream on every platform and Python version.
    return random.Random(f"sprout:{job_seed}:{number}")


def build_request(
    spec: RequestSpec,
    templates: Mapping[str, PromptTemplates],
    examples: Sequence[TaskExample],
    *,
    job_seed: int,
    number: int,
) -> LLMRequest:
    """Request `number` of the job seeded `job_seed`: sampled examples, rendered prompt(s), sampling seed."""
    if not examples:
        raise ValueError("no seed tasks to sample examples from")
    rng = _rng(job_seed, number)
    k = min(spec.num_examples, len(examples))
    count = spec.prompts_per_request if spec.mode == "completions" else 1
    samples = [rng.sample(list(examples), k) for _ in range(count)]
    languages = tuple(spec.language if spec.language != "auto" else choose_language(s) for s in samples)
    model_seed = rng.randrange(2**31)  # drawn either way, so the examples never depend on the choice
    sampling = replace(spec.sampling, seed=model_seed if spec.seed_the_model else None)
    if spec.mode == "completions":
        prompts = tuple(
            render_completion_prompt(templates[lang].completion, s, spec.tasks_per_prompt, language=lang)
            for s, lang in zip(samples, languages, strict=True)
        )
        # One request carries every prompt, so the stop strings cover each language in it.
        stop = sorted(
            {
                s
                for lang in languages
                for s in completion_stop_sequences(k, spec.tasks_per_prompt, language=lang)
            }
        )
        return LLMRequest(
            number=number,
            mode="completions",
            languages=languages,
            sampling=replace(sampling, stop=tuple(stop)),
            prompts=prompts,
            first_index=next_index(k),
        )
    chosen = templates[languages[0]]
    messages = render_chat_messages(chosen.chat_system, chosen.chat_user, samples[0], spec.tasks_per_prompt)
    return LLMRequest(
        number=number,
        mode="chat",
        languages=languages,
        sampling=sampling,
        messages=tuple(ChatMessage(role=role, content=text) for role, text in messages),
        json_schema=tasks_json_schema(spec.tasks_per_prompt),
    )
