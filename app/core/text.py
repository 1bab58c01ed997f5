"""Text hygiene for untrusted strings (model output, uploads) before they reach the database.

PostgreSQL refuses NUL in text columns and every database driver refuses lone UTF-16 surrogates (which JSON
escapes such as "\\ud800" produce); SQLite stores both silently. Cleaning at one place keeps every database
and every later reader (exports, the UI) on the same, valid text.
"""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def storable(text: str) -> str:
    """`text` with NUL removed and each lone surrogate replaced by U+FFFD; unchanged when already clean."""
    if not _UNSTORABLE.search(text):
        return text
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else REPLACEMENT, text)


def clip(text: str, limit: int) -> tuple[str, bool]:
    """At most `limit` characters of `text`, and whether anything was cut."""
    return (text, False) if len(text) <= limit else (text[:limit], True)
