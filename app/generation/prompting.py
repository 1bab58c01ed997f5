"""Turn prompt templates and sampled examples into the text an LLM sees.

Pure: the caller reads the template files (app.generation.templates) and passes their text in.

Templates use `string.Template` slots (`$name` or `${name}`; `$$` is a literal dollar sign). That syntax
leaves braces alone, so the chat templates can show JSON as it is, and substitution is a single pass: text put
into a slot is never scanned again, so seeds holding "{", "}", "$", "###" or "$examples" come out exactly as
they went in.

Completion prompts are a numbered list that the model continues. The k examples are numbered 1..k, and the
prompt ends with the label of item k + 1 ("4. Instruction:") so that the model's first words are the next
instruction; `response_parsing.parse_numbered_tasks` takes that same index as `first_index`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import Template
from typing import Literal

from app.dedup.tokenize import cjk_ratio
from app.generation.candidates import TaskExample

Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")
ChatRole = Literal["system", "user"]

# An example counts as Chinese when at least this share of its instruction's tokens are CJK characters.
_CJK_EXAMPLE_RATIO = 0.5

# A slot or an escaped dollar in string.Template syntax.
_SLOT_RE = re.compile(r"\$(?:\$|[_a-z][_a-z0-9]*|\{[_a-z][_a-z0-9]*\})", re.IGNORECASE)

# The line between two items of a completion prompt (and of the model's continuation).
ITEM_SEPARATOR = "###"


@dataclass(frozen=True, slots=True)
class ListLabels:
    """The field labels of a numbered task list in one language (colon included) and its no-input marker."""

    instruction: str
    input: str
    output: str
    no_input: str


LABELS: Mapping[Language, ListLabels] = {
    "en": ListLabels(instruction="Instruction:", input="Input:", output="Output:", no_input="<noinput>"),
    "zh": ListLabels(instruction="指令：", input="输入：", output="输出：", no_input="<无输入>"),
}

# Slots each kind of template may use. A template must use the required ones (else the examples or the point
# where the model continues would silently be missing) and no others (a typo would otherwise reach the model).
COMPLETION_SLOTS = frozenset(
    {
        "examples",
        "num_tasks",
        "num_examples",
        "next_index",
        "last_index",
        "instruction_label",
        "input_label",
        "output_label",
        "no_input",
    }
)
COMPLETION_REQUIRED_SLOTS = frozenset({"examples", "next_index", "instruction_label"})
CHAT_SLOTS = frozenset({"examples_json", "num_tasks", "num_examples"})
CHAT_USER_REQUIRED_SLOTS = frozenset({"examples_json", "num_tasks"})
CHAT_SYSTEM_REQUIRED_SLOTS: frozenset[str] = frozenset()


class TemplateError(ValueError):
    """A template is malformed or uses the wrong slots. Raised before any prompt reaches a model."""


def labels_for(language: str) -> ListLabels:
    """The labels of a language, with an error that lists the supported ones."""
    try:
        return LABELS[language]  # type: ignore[index]
    except KeyError:
        raise ValueError(
            f"unsupported prompt language {language!r}; supported: {', '.join(LANGUAGES)}"
        ) from None


def is_chinese_example(example: TaskExample) -> bool:
    """Judge by the instruction: a translation task's input or output may be in another language."""
    return cjk_ratio(example.instruction) >= _CJK_EXAMPLE_RATIO


def choose_language(examples: Sequence[TaskExample]) -> Language:
    """Prompt in Chinese when most of the sampled examples are Chinese (a strict majority), else in English.

    The prompt's language steers the language of the new tasks, so it follows the examples the model will
    imitate.
    """
    chinese = sum(1 for example in examples if is_chinese_example(example))
    return "zh" if chinese * 2 > len(examples) else "en"


def template_language(template: str) -> Language:
    """The language a template is written in, judged on its words (slot names like $num_tasks aside)."""
    words = _SLOT_RE.sub(" ", template)
    return "zh" if cjk_ratio(words) >= _CJK_EXAMPLE_RATIO else "en"


def next_index(num_examples: int) -> int:
    """The number of the first item the model writes: examples take 1..k."""
    return num_examples + 1


def completion_stop_sequences(num_examples: int, num_tasks: int, *, language: str = "en") -> tuple[str, ...]:
    """Stop strings that end generation where the item after the last requested one would start.

    Without them a model that keeps going spends tokens on items nobody asked for, and is then cut mid-item.
    They include the separator or the label, never a bare "\\nN.": an output that is itself a numbered list
    (a recipe with nine steps) must not stop the model inside an item that would then look complete.
    """
    after_last = next_index(num_examples) + num_tasks
    return (f"{ITEM_SEPARATOR}\n{after_last}.", f"\n{after_last}. {labels_for(language).instruction}")


def check_template(template: str, *, allowed: frozenset[str], required: frozenset[str], name: str) -> None:
    """Raise TemplateError when a template has a stray "$", an unknown slot, or lacks a required one."""
    parsed = Template(template)
    if not parsed.is_valid():
        raise TemplateError(f"{name}: invalid '$' placeholder (write $$ for a literal dollar sign)")
    used = set(parsed.get_identifiers())
    unknown = sorted(used - allowed)
    if unknown:
        raise TemplateError(
            f"{name}: unknown slot(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    missing = sorted(required - used)
    if missing:
        raise TemplateError(f"{name}: missing required slot(s) {', '.join(missing)}")


def _substitute(template: str, values: Mapping[str, object], name: str) -> str:
    try:
        return Template(template).substitute(values)
    except (KeyError, ValueError) as exc:
        raise TemplateError(f"{name}: cannot render: {exc}") from exc


def _after_label(label: str) -> str:
    """The gap between a label and same-line text: a space after ":", none after a full-width "："."""
    return "" if label.endswith("：") else " "


def render_example_block(index: int, example: TaskExample, labels: ListLabels) -> str:
    """One numbered item: the instruction on its label's line, input and output (maybe multi-line) below."""
    task_input = example.input.strip() or labels.no_input
    instruction = (
        f"{index}. {labels.instruction}{_after_label(labels.instruction)}{example.instruction.strip()}"
    )
    return "\n".join(
        [
            instruction,
            f"{index}. {labels.input}",
            task_input,
            f"{index}. {labels.output}",
            example.output.strip(),
        ]
    )


def render_example_list(examples: Sequence[TaskExample], labels: ListLabels, *, start: int = 1) -> str:
    """The examples numbered from `start`, each after a separator line, and a separator after the last."""
    blocks = [
        f"{ITEM_SEPARATOR}\n{render_example_block(i, ex, labels)}"
        for i, ex in enumerate(examples, start=start)
    ]
    return "\n".join([*blocks, ITEM_SEPARATOR])


def render_completion_prompt(
    template: str, examples: Sequence[TaskExample], num_tasks: int, *, language: str | None = None
) -> str:
    """Fill a completion template; the result ends with "<k+1>. <Instruction label>" and nothing after it.

    `language` picks the list labels ("Instruction:" or "指令："); by default it is read off the template
    itself (mostly CJK text: Chinese), so the labels always match the language the template is written in.
    Trailing whitespace is dropped: a space or newline after the label changes how the model tokenizes its
    first word, and the parser expects the instruction text to start right away.
    """
    if num_tasks < 1:
        raise ValueError("num_tasks must be at least 1")
    labels = labels_for(language or template_language(template))
    check_template(template, allowed=COMPLETION_SLOTS, required=COMPLETION_REQUIRED_SLOTS, name="completion")
    first = next_index(len(examples))
    values = {
        "examples": render_example_list(examples, labels),
        "num_tasks": num_tasks,
        "num_examples": len(examples),
        "next_index": first,
        "last_index": first + num_tasks - 1,
        "instruction_label": labels.instruction,
        "input_label": labels.input,
        "output_label": labels.output,
        "no_input": labels.no_input,
    }
    prompt = _substitute(template, values, "completion").rstrip()
    tail = f"{first}. {labels.instruction}"
    if not prompt.endswith(tail):
        raise TemplateError(
            f"completion: the rendered prompt must end with {tail!r} so the model continues the list"
        )
    return prompt


def examples_json(examples: Sequence[TaskExample]) -> str:
    """The examples in exactly the JSON shape the model must answer with, so it can copy the shape."""
    tasks = [{"instruction": ex.instruction, "input": ex.input, "output": ex.output} for ex in examples]
    return json.dumps({"tasks": tasks}, ensure_ascii=False, indent=2)


def render_chat_messages(
    system_template: str, user_template: str, examples: Sequence[TaskExample], num_tasks: int
) -> list[tuple[ChatRole, str]]:
    """A system + user message pair asking for {"tasks": [...]}, each message stripped of outer whitespace."""
    if num_tasks < 1:
        raise ValueError("num_tasks must be at least 1")
    check_template(
        system_template, allowed=CHAT_SLOTS, required=CHAT_SYSTEM_REQUIRED_SLOTS, name="chat system"
    )
    check_template(user_template, allowed=CHAT_SLOTS, required=CHAT_USER_REQUIRED_SLOTS, name="chat user")
    values = {"examples_json": examples_json(examples), "num_tasks": num_tasks, "num_examples": len(examples)}
    messages: list[tuple[ChatRole, str]] = []
    system = _substitute(system_template, values, "chat system").strip()
    if system:
        messages.append(("system", system))
    messages.append(("user", _substitute(user_template, values, "chat user").strip()))
    return messages
