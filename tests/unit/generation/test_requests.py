"""Request r of a job is a pure function of (job seed, r): a resumed job never repeats a request it stored."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from app.generation.candidates import TaskExample
from app.generation.parsing import parse_json_tasks
from app.generation.pipeline.requests import RequestSpec, build_request, request_numbers
from app.generation.templates import load_templates
from app.llm.base import SamplingParams

PROMPTS = Path(__file__).resolve().parents[3] / "prompts"
EXAMPLES = [
    TaskExample(f"Write a sentence about subject number {i}.", "", f"Sentence {i}.") for i in range(30)
]
CHINESE = [TaskExample(f"把第{i}句话翻译成英文：你好", "", "Hello") for i in range(10)]


def spec(mode: str = "chat", **changes: object) -> RequestSpec:
    values = {
        "mode": mode,
        "num_examples": 3,
        "tasks_per_prompt": 4,
        "prompts_per_request": 1 if mode == "chat" else 3,
        "language": "auto",
        "sampling": SamplingParams(temperature=0.7, max_tokens=200, n=2),
        **changes,
    }
    return RequestSpec(**values)  # type: ignore[arg-type]


def templates(mode: str) -> dict:
    return {lang: load_templates(PROMPTS, mode, lang) for lang in ("en", "zh")}  # type: ignore[arg-type]


def test_same_seed_and_number_give_the_same_request_and_other_numbers_do_not() -> None:
    t = templates("chat")
    first = build_request(spec(), t, EXAMPLES, job_seed=42, number=7)
    again = build_request(spec(), t, EXAMPLES, job_seed=42, number=7)
    assert first == again
    others = {build_request(spec(), t, EXAMPLES, job_seed=42, number=r).messages for r in range(20)}
    assert len(others) == 20
    assert build_request(spec(), t, EXAMPLES, job_seed=43, number=7).messages != first.messages
    assert first.sampling.seed == again.sampling.seed and first.sampling.n == 2


def test_chat_requests_ask_for_json_capped_at_the_tasks_wanted() -> None:
    request = build_request(spec(), templates("chat"), EXAMPLES, job_seed=1, number=0)
    assert request.mode == "chat" and request.sequences == 2 and request.prompt_count == 1
    assert request.json_schema is not None and request.json_schema["properties"]["tasks"]["maxItems"] == 4
    assert [m.role for m in request.messages] == ["system", "user"]
    assert parse_json_tasks('{"tasks": []}', finish_reason="stop").items == []


def test_completion_requests_carry_several_prompts_and_stops_for_each_language() -> None:
    mixed = EXAMPLES[:3] + CHINESE
    request = build_request(spec("completions"), templates("completions"), mixed, job_seed=5, number=3)
    assert request.mode == "completions" and len(request.prompts) == 3 and request.sequences == 6
    assert request.first_index == 4
    for prompt, language in zip(request.prompts, request.languages, strict=True):
        assert prompt.endswith("4. Instruction:" if language == "en" else "4. 指令：")
    assert any("###\n8." in stop for stop in request.sampling.stop)


def test_request_numbers_skip_what_a_job_already_stored() -> None:
    assert list(islice(request_numbers(frozenset({0, 1, 3, 6})), 5)) == [2, 4, 5, 7, 8]


def test_the_model_gets_a_seed_only_when_the_caller_gave_one_and_the_examples_do_not_depend_on_it() -> None:
    t = templates("chat")
    unseeded = build_request(spec(), t, EXAMPLES, job_seed=42, number=3)
    seeded = build_request(spec(seed_the_model=True), t, EXAMPLES, job_seed=42, number=3)
    assert unseeded.sampling.seed is None and isinstance(seeded.sampling.seed, int)
    assert unseeded.messages == seeded.messages
