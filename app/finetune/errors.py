"""Errors of the OpenAI-compatible surface (/v1/files, /v1/fine_tuning): OpenAI's body, `{"error": {message,
type, param, code}}`, which the official SDK turns into BadRequestError, NotFoundError, ConflictError, ..."""

from __future__ import annotations

import re
from typing import Any

OPENAI_PREFIXES = ("/v1/files", "/v1/fine_tuning")


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIXES)


class FieldError(ValueError):
    """A request field the server refuses (HTTP 400 with `param`), e.g. an unknown model or a too-long suffix."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.code = code


class FileValidationError(ValueError):
    """A training or validation file whose content cannot be trained on: the job fails with this error."""

    def __init__(self, code: str, message: str, param: str = "training_file") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def error_body(
    message: str, *, param: str | None = None, code: str | None = None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_LOCATIONS = frozenset({"body", "query", "path", "form"})
_TYPE_TAGS = frozenset({"int", "float", "str", "bool", "list", "dict", "none"})


def _param(loc: Any) -> str:
    """A field's path as OpenAI names it: hyperparameters.n_epochs, without pydantic's union-member tags."""
    parts = []
    for part in loc:
        text = str(part)
        if part in _LOCATIONS or text in _TYPE_TAGS or not re.match(r"^[A-Za-z0-9_]+$", text):
            continue
        parts.append(text)
    return ".".join(parts)


def validation_error_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """FastAPI's validation errors as OpenAI's 400: the first error's field is the `param`."""
    if not errors:
        return error_body("invalid request", code="invalid_value")
    param = _param(errors[0].get("loc", ()))
    messages = dict.fromkeys(f"{_param(e.get('loc', ())) or 'body'}: {e.get('msg')}" for e in errors)
    return error_body("; ".join(messages), param=param or None, code="invalid_value")
