"""Read the prompt templates of one mode and language from the prompts directory (layout: prompts/README.md).

Templates are checked when they are loaded, so a broken file fails the job at once with the file's name
instead of sending a half-filled prompt to the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.generation.candidates import TaskExample
from app.generation.prompting import (
    CHAT_SLOTS,
    CHAT_SYSTEM_REQUIRED_SLOTS,
    CHAT_USER_REQUIRED_SLOTS,
    COMPLETION_REQUIRED_SLOTS,
    COMPLETION_SLOTS,
    LANGUAGES,
    Language,
    TemplateError,
    check_template,
    render_completion_prompt,
)

PromptMode = Literal["completions", "chat"]

_PROBE_EXAMPLE = TaskExample(instruction="probe", input="", output="probe")


class TemplateNotFoundError(FileNotFoundError):
    """A template file the chosen mode and language need does not exist."""


@dataclass(frozen=True, slots=True)
class PromptTemplates:
    """The template texts of one mode and language: `completion` in completions mode, the chat pair otherwise.

    The other mode's fields stay empty strings (rendering one fails loudly with "missing required slot").
    """

    mode: PromptMode
    language: Language
    completion: str = ""
    chat_system: str = ""
    chat_user: str = ""


def template_file_names(mode: PromptMode, language: str) -> dict[str, str]:
    """Which file holds which template, e.g. completions/en -> {"completion": "completion.en.txt"}."""
    if mode == "completions":
        return {"completion": f"completion.{language}.txt"}
    if mode == "chat":
        return {"chat_system": f"chat_system.{language}.txt", "chat_user": f"chat_user.{language}.txt"}
    raise ValueError(f"unknown prompt mode {mode!r}; expected 'completions' or 'chat'")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateNotFoundError(f"prompt template not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def _check(name: str, text: str, path: Path, language: Language) -> None:
    """Check slots, and that a completion template really ends with the label the parser expects."""
    try:
        if name == "completion":
            check_template(text, allowed=COMPLETION_SLOTS, required=COMPLETION_REQUIRED_SLOTS, name=str(path))
            render_completion_prompt(text, [_PROBE_EXAMPLE], 1, language=language)
        else:
            required = CHAT_SYSTEM_REQUIRED_SLOTS if name == "chat_system" else CHAT_USER_REQUIRED_SLOTS
            check_template(text, allowed=CHAT_SLOTS, required=required, name=str(path))
    except TemplateError as exc:
        message = str(exc)
        raise TemplateError(message if str(path) in message else f"{path}: {message}") from exc


def load_templates(prompts_dir: Path, mode: PromptMode, language: str) -> PromptTemplates:
    """Read and check the templates of one mode and language; errors name the offending file."""
    if language not in LANGUAGES:
        raise ValueError(f"unsupported prompt language {language!r}; supported: {', '.join(LANGUAGES)}")
    lang: Language = language  # type: ignore[assignment]
    texts: dict[str, str] = {}
    for name, file_name in template_file_names(mode, lang).items():
        path = Path(prompts_dir) / file_name
        text = _read(path)
        _check(name, text, path, lang)
        texts[name] = text
    return PromptTemplates(mode=mode, language=lang, **texts)
