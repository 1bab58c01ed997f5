"""Plain data that flows between the pipeline's pure steps."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TaskExample:
    """One in-context example shown to the model: a seed task (or an accepted item) with one instance."""

    instruction: str
    input: str = ""
    output: str = ""
    is_classification: bool = False


@dataclass(frozen=True, slots=True)
class CandidateItem:
    """An instruction/input/output triple parsed from model output, before any filter has looked at it."""

    instruction: str
    input: str = ""
    output: str = ""


@dataclass(slots=True)
class ParseResult:
    """What one model response yielded: the items that parsed, and how many chunks did not."""

    items: list[CandidateItem] = field(default_factory=list)
    unparsed: int = 0
