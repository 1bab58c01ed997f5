"""Response shapes shared by every room."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    total: int
    limit: int
    offset: int


class CursorPage(BaseModel, Generic[T]):
    """A keyset page: pass `next_cursor` back as `cursor` for the next one (None on the last page). `total` is
    counted only when asked for (`count=true`): counting a large dataset costs a scan."""

    data: list[T]
    next_cursor: str | None
    total: int | None = None
