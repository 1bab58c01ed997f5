"""Errors every room raises; app.main turns each into one HTTP status, the CLI into one message."""

from __future__ import annotations


class NotFoundError(LookupError):
    """A named or numbered thing does not exist (HTTP 404)."""


class ConflictError(ValueError):
    """The request clashes with what is stored, e.g. a name already taken or a job already finished (409)."""


class InvalidFieldError(ValueError):
    """One field of a request is wrong in a way only the server can tell, e.g. an unknown backend name (422).

    `field` is the field's path in the request body (or the query, by `location`), so the 422 has the shape of
    FastAPI's own validation errors.
    """

    def __init__(self, field: str, message: str, *, location: str = "body") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.location = location  # "body" or "query", as in FastAPI's own errors


class ForbiddenError(PermissionError):
    """The caller is known but may not do this to this thing, e.g. settle a dispute without being an admin (403)."""


class StaleError(ConflictError):
    """What the caller acted on changed since they read it (409); the answer carries the thing as it is now,
    read again after the failed transaction rolled back (`item_id` says which)."""

    def __init__(self, message: str, item_id: int) -> None:
        super().__init__(message)
        self.item_id = item_id
