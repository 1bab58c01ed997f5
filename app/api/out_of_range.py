"""Numbers too large for the database's integer columns (an id of 30 digits): SQLite's driver refuses to bind
them (OverflowError) and PostgreSQL refuses to compare them with an `integer` column (numeric value out of
range), either of which would be a 500. This names the parameter that held one, for a 422."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.exc import DataError

from app.core.errors import InvalidFieldError

INT32_MAX = 2**31 - 1  # PostgreSQL's `integer`, the narrowest id column
MESSAGE = "a number out of range"


def numeric_out_of_range(exc: DataError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "22003"  # numeric_value_out_of_range


def _too_large(value: object) -> bool:
    text = str(value).strip().lstrip("+-")
    return text.isdigit() and int(text) > INT32_MAX


def out_of_range(path_params: Mapping[str, object], query_params: Mapping[str, object]) -> InvalidFieldError:
    """The error for the first path or query parameter whose number is too large; else the body's (the driver
    does not say which of its numbers it was)."""
    for location, params in (("path", path_params), ("query", query_params)):
        for name, value in params.items():
            if _too_large(value):
                return InvalidFieldError(name, MESSAGE, location=location)
    return InvalidFieldError("", MESSAGE)
