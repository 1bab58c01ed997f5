"""A dry run of a generation job: one request, and everything the pipeline would make of its reply, stored nowhere.

It answers "why does my job accept nothing?": the exact prompt, the raw reply, what parsed, which filter
dropped what, and which existing seed or item each near-duplicate is near.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.errors import ConflictError
from app.datasets.service import all_seeds, get_dataset, seed_instructions
from app.finetune.serving import check_adapter
from app.generation.filters import FilterConfig
from app.generation.params import GenerationParams, resolve_params
from app.generation.pipeline.accept import NEAR_DUPLICATE, Thresholds, catch_up, evidence_key, new_index
from app.generation.pipeline.requests import LLMRequest, RequestSpec, build_request
from app.generation.pipeline.runner import example_of
from app.generation.pipeline.screening import ScreenedReply, failed_reply, screen_reply
from app.generation.service import item_instructions
from app.generation.templates import load_templates
from app.llm import BackendRegistry, LLMError


@dataclass(slots=True)
class Preview:
    backend: str
    mode: str
    request: dict[str, Any]
    screened: ScreenedReply
    candidates: list[dict[str, Any]]


async def preview_generation(
    sessions: sessionmaker[Session],
    settings: Settings,
    registry: BackendRegistry,
    dataset_id: int,
    params: GenerationParams,
) -> Preview:
    backend_name = params.backend or settings.default_backend
    backend_settings = registry.settings_of(backend_name)
    resolved = resolve_params(params, settings, backend_settings)
    seed = params.seed if params.seed is not None else secrets.randbelow(2**31)

    def load() -> tuple[LLMRequest, Any]:
        with sessions() as session:
            get_dataset(session, dataset_id)
            if resolved.model is not None:  # a tuned model: only one registered on this backend
                check_adapter(session, backend_name, resolved.model)
            seeds = all_seeds(session, dataset_id)
            if not seeds:
                raise ConflictError(
                    f"dataset {dataset_id} has no seed tasks yet: import seeds before generating"
                )
            languages = ("en", "zh") if resolved.language == "auto" else (resolved.language,)
            templates = {
                lang: load_templates(settings.prompts_dir, resolved.mode, lang) for lang in languages
            }
            spec = RequestSpec.of(resolved)
            request = build_request(spec, templates, [example_of(s) for s in seeds], job_seed=seed, number=0)
            index = new_index(Thresholds(resolved.rouge_threshold, resolved.fuzzy_cutoff))
            catch_up(session, index, dataset_id, 0, 0)
            return request, index

    request, index = await asyncio.to_thread(load)
    backend = await registry.get(backend_name)
    started = time.perf_counter()
    try:
        if request.mode == "completions":
            reply = await backend.complete(request.prompts, request.sampling)
        else:
            reply = await backend.chat(request.messages, request.sampling, json_schema=request.json_schema)
    except LLMError as exc:
        screened = failed_reply(request, str(exc), latency_ms=_ms(started))
    else:
        screened = screen_reply(
            request, reply, FilterConfig(), log_chars=settings.reply_log_chars, latency_ms=_ms(started)
        )
    candidates = await asyncio.to_thread(_judge, sessions, index, screened)
    return Preview(backend_name, request.mode, _describe(request), screened, candidates)


def _judge(sessions: sessionmaker[Session], index: Any, screened: ScreenedReply) -> list[dict[str, Any]]:
    """Each candidate's verdict as the accept step would give it, with the nearest neighbour's text."""
    passing = [c for c in screened.candidates if c.reason is None]
    checks = iter(index.check_and_add_many([(("new", i), c.item.instruction) for i, c in enumerate(passing)]))
    out = []
    for candidate in screened.candidates:
        entry: dict[str, Any] = {
            "instruction": candidate.item.instruction,
            "input": candidate.item.input,
            "output": candidate.item.output,
            "verdict": "filtered",
            "filter_reason": candidate.reason,
            "duplicate_signal": None,
            "nearest": None,
            "nearest_text": None,
        }
        if candidate.reason is None:
            check = next(checks)
            entry["verdict"] = "near_duplicate" if check.is_duplicate else "accepted"
            if check.is_duplicate:
                entry["filter_reason"], entry["duplicate_signal"] = NEAR_DUPLICATE, check.signal
            key = evidence_key(check)
            if key is not None:
                kind, ident = key
                text = passing[ident].item.instruction if kind == "new" else _text_of(sessions, kind, ident)
                entry["nearest"] = {
                    "kind": "item" if kind == "new" else kind,
                    "id": None if kind == "new" else ident,
                    "rouge_l": check.nearest_score,
                }
                entry["nearest_text"] = text
        out.append(entry)
    return out


def _text_of(sessions: sessionmaker[Session], kind: str, ident: int) -> str | None:
    with sessions() as session:
        texts = seed_instructions(session, [ident]) if kind == "seed" else item_instructions(session, [ident])
    return texts.get(ident)


def _describe(request: LLMRequest) -> dict[str, Any]:
    sampling = request.sampling
    described: dict[str, Any] = {
        "request_no": request.number,
        "languages": list(request.languages),
        "sampling": {
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "n": sampling.n,
            "stop": list(sampling.stop),
            "seed": sampling.seed,
        },
    }
    if request.mode == "completions":
        described["prompts"] = list(request.prompts)
    else:
        described["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        described["json_schema"] = request.json_schema
    return described


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
