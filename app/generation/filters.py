"""Heuristic filters: cheap rules that throw out candidates a reviewer should never have to see.

Every rejection has a reason code from `FilterReason` (stored with the filtered item, shown to reviewers,
counted per job). `check_candidate` applies the rules in the order of that enum and returns the first that
fails.

Deliberately absent: Alpaca's "the first character must be ASCII" rule. It rejects every Chinese instruction,
and Chinese tasks are as welcome here as English ones. Every rule below is written to work on both scripts.

Lengths are counted with app.dedup.tokenize: a Latin word is one token, and so is each CJK character. A Chinese
word is one to three characters, so a Chinese instruction has about twice as many tokens as its English
translation; the instruction length bounds therefore have a CJK pair, used when most of the tokens are CJK.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

from app.dedup.tokenize import cjk_share, has_cjk, tokenize
from app.generation.candidates import CandidateItem


class FilterReason(StrEnum):
    """Why a candidate was filtered out, in the order the rules run. Values are stored: never rename one."""

    empty_instruction = "empty_instruction"  # nothing left after stripping whitespace
    instruction_too_short = "instruction_too_short"  # under the (CJK) minimum token count
    instruction_too_long = "instruction_too_long"  # over the (CJK) maximum token count
    starts_with_punctuation = "starts_with_punctuation"  # punctuation or a non-currency symbol
    blocklisted_keyword = "blocklisted_keyword"  # needs more than text (image, 视频...)
    starts_with_write_a_program = "starts_with_write_a_program"  # Alpaca's rule; prefixes configurable
    input_too_long = "input_too_long"  # more characters than max_input_chars
    empty_output = "empty_output"  # nothing left after stripping whitespace
    output_only_punctuation = "output_only_punctuation"  # only punctuation, symbols (emoji) and whitespace
    output_too_long = "output_too_long"  # more characters than max_output_chars
    input_equals_output = "input_equals_output"  # same text once stripped, casefolded, whitespace collapsed


# Things a text-only model cannot do (or cannot be checked doing). Latin keywords match whole words,
# case-insensitively; keywords holding a CJK character match as substrings, since Chinese has no spaces.
DEFAULT_BLOCKLIST: tuple[str, ...] = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "photo",
    "photos",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
    "video",
    "videos",
    "audio",
    "music",
    "flowchart",
    "diagram",
    "diagrams",
    "图片",
    "图像",
    "照片",
    "画一",
    "画出",
    "绘制",
    "视频",
    "音频",
    "音乐",
    "录音",
    "流程图",
    "示意图",
    "图表",
    "文件",
    "地图",
)

# Alpaca's rule: programs are out of scope for a short text answer. Matched on the casefolded,
# space-normalised start.
DEFAULT_PROGRAM_PREFIXES: tuple[str, ...] = ("write a program", "编写一个程序", "写一个程序")

# A leading character that opens something is a normal start ("《红楼梦》的作者是谁？", "“Carpe diem”
# means?", "(a) or (b)?"), so opening brackets and quotes (Ps, Pi), the ASCII quotes and Spanish ¿ ¡ are
# allowed, and so are currency signs ("$5 is how many yen?"). Bullets, colons, commas, closing marks, math
# signs and emoji are not.
_ALLOWED_LEADING = frozenset("\"'¿¡")
_REJECTED_LEADING_CATEGORIES = frozenset({"Pc", "Pd", "Pe", "Pf", "Po", "Sm", "Sk", "So"})
_WHITESPACE_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds, the blocklist, and which rules are off. Defaults suit both English and Chinese tasks.

    Instruction bounds count tokens (app.dedup.tokenize); the `_cjk` pair applies when at least half of the
    instruction's tokens are CJK characters. Input and output bounds count characters and only stop runaway
    text. `None` turns a bound off; `disabled` turns whole rules off by their reason code.
    """

    min_instruction_tokens: int = 3
    max_instruction_tokens: int | None = 150
    min_instruction_tokens_cjk: int = 3
    max_instruction_tokens_cjk: int | None = 300
    max_input_chars: int | None = 4000
    max_output_chars: int | None = 8000
    blocklist: tuple[str, ...] = DEFAULT_BLOCKLIST
    program_prefixes: tuple[str, ...] = DEFAULT_PROGRAM_PREFIXES
    disabled: frozenset[FilterReason] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        # Accept plain strings (settings, JSON) but fail on a typo instead of silently keeping the rule on.
        try:
            disabled = frozenset(FilterReason(reason) for reason in self.disabled)
        except ValueError as exc:
            raise ValueError(f"unknown filter reason in disabled: {exc}") from None
        object.__setattr__(self, "disabled", disabled)
        object.__setattr__(self, "blocklist", tuple(self.blocklist))
        object.__setattr__(self, "program_prefixes", tuple(self.program_prefixes))


def _is_punctuation_or_symbol(char: str) -> bool:
    return unicodedata.category(char)[0] in "PSZ" or char.isspace()


def starts_with_punctuation(text: str) -> bool:
    """True when the first visible character is punctuation or a symbol ("-", "*", "：", "，", "+", "🙂").

    Letters, digits, CJK characters, currency signs, opening brackets and opening quotes are all fine starts.
    """
    stripped = text.lstrip()
    if not stripped:
        return False
    first = stripped[0]
    return first not in _ALLOWED_LEADING and unicodedata.category(first) in _REJECTED_LEADING_CATEGORIES


def is_only_punctuation(text: str) -> bool:
    """True for non-empty text made only of punctuation, symbols (emoji included) and whitespace."""
    return bool(text.strip()) and all(_is_punctuation_or_symbol(char) for char in text)


@lru_cache(maxsize=32)
def _blocklist_pattern(blocklist: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex for the whole list: CJK keywords as substrings, Latin ones as whole words.

    "Whole word" means not touching another ASCII letter or digit, the same notion of a word as the
    tokenizer's, so "mapping" does not hit "map" while "画一张map" does; the space inside "go to" matches any
    run of whitespace. Keywords are tried longest first. For speed (the filter runs on every candidate), the
    word-boundary checks wrap runs of Latin keywords instead of each one, and a look-ahead for the keywords'
    first characters lets the regex engine skip every other position at once (fourteen times faster on real
    instructions, same matches).
    """
    keywords = sorted({k.strip() for k in blocklist if k.strip()}, key=len, reverse=True)
    if not keywords:
        return None
    parts: list[str] = []
    latin: list[str] = []
    for keyword in keywords:
        if has_cjk(keyword):
            if latin:
                parts.append(rf"(?<![a-z0-9])(?:{'|'.join(latin)})(?![a-z0-9])")
                latin = []
            parts.append(re.escape(keyword))
        else:
            latin.append(r"\s+".join(re.escape(word) for word in keyword.split()))
    if latin:
        parts.append(rf"(?<![a-z0-9])(?:{'|'.join(latin)})(?![a-z0-9])")
    firsts = "".join(sorted({re.escape(k[0]) for k in keywords}))
    return re.compile(rf"(?=[{firsts}])(?:{'|'.join(parts)})", re.IGNORECASE)


def find_blocklisted(text: str, blocklist: tuple[str, ...]) -> str | None:
    """The first blocklisted keyword in the text, as written there, or None."""
    pattern = _blocklist_pattern(blocklist)
    match = pattern.search(text) if pattern is not None else None
    return None if match is None else match.group(0)


def _normalized(text: str) -> str:
    return _WHITESPACE_RE.sub(" ", text.strip()).casefold()


@dataclass(frozen=True, slots=True)
class _Fields:
    """A candidate's stripped fields and the instruction's token count, computed once for all rules."""

    instruction: str
    input: str
    output: str
    instruction_tokens: int
    mostly_cjk: bool

    @classmethod
    def of(cls, item: CandidateItem) -> _Fields:
        instruction = item.instruction.strip()
        tokens = tokenize(instruction)
        return cls(
            instruction=instruction,
            input=item.input.strip(),
            output=item.output.strip(),
            instruction_tokens=len(tokens),
            mostly_cjk=cjk_share(tokens) >= 0.5,
        )


def _too_short(f: _Fields, config: FilterConfig) -> bool:
    low = config.min_instruction_tokens_cjk if f.mostly_cjk else config.min_instruction_tokens
    return f.instruction_tokens < low


def _too_long(f: _Fields, config: FilterConfig) -> bool:
    high = config.max_instruction_tokens_cjk if f.mostly_cjk else config.max_instruction_tokens
    return high is not None and f.instruction_tokens > high


@lru_cache(maxsize=32)
def _normalized_prefixes(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_normalized(prefix) for prefix in prefixes if prefix.strip())


def _starts_with_program(f: _Fields, config: FilterConfig) -> bool:
    prefixes = _normalized_prefixes(config.program_prefixes)
    return bool(prefixes) and _normalized(f.instruction).startswith(prefixes)


def _over(limit: int | None, text: str) -> bool:
    return limit is not None and len(text) > limit


# One predicate per reason; check_candidate walks them in the enum's order.
_RULES: dict[FilterReason, Callable[[_Fields, FilterConfig], bool]] = {
    FilterReason.empty_instruction: lambda f, _: not f.instruction,
    FilterReason.instruction_too_short: _too_short,
    FilterReason.instruction_too_long: _too_long,
    FilterReason.starts_with_punctuation: lambda f, _: starts_with_punctuation(f.instruction),
    FilterReason.blocklisted_keyword: lambda f, c: find_blocklisted(f.instruction, c.blocklist) is not None,
    FilterReason.starts_with_write_a_program: _starts_with_program,
    FilterReason.input_too_long: lambda f, c: _over(c.max_input_chars, f.input),
    FilterReason.empty_output: lambda f, _: not f.output,
    FilterReason.output_only_punctuation: lambda f, _: is_only_punctuation(f.output),
    FilterReason.output_too_long: lambda f, c: _over(c.max_output_chars, f.output),
    FilterReason.input_equals_output: lambda f, _: (
        bool(f.input) and _normalized(f.input) == _normalized(f.output)
    ),
}


def check_candidate(item: CandidateItem, config: FilterConfig) -> FilterReason | None:
    """The first rule the candidate fails (rules in FilterReason order, disabled ones skipped), or None.

    Fields are judged with surrounding whitespace stripped. The blocklist looks at the instruction only: an
    input may mention a file or a picture ("Summarize: the photo shows...") without asking the model for one.
    """
    fields = _Fields.of(item)
    for reason in FilterReason:
        if reason not in config.disabled and _RULES[reason](fields, config):
            return reason
    return None


def partition_candidates(
    items: Iterable[CandidateItem], config: FilterConfig
) -> tuple[list[CandidateItem], list[tuple[CandidateItem, FilterReason]]]:
    """Split candidates into those that pass and those filtered out, each of the latter with its reason."""
    kept: list[CandidateItem] = []
    filtered: list[tuple[CandidateItem, FilterReason]] = []
    for item in items:
        reason = check_candidate(item, config)
        if reason is None:
            kept.append(item)
        else:
            filtered.append((item, reason))
    return kept, filtered
