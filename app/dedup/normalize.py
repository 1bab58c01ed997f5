"""The normal form under which two texts count as "the same text" for the exact and fuzzy duplicate signals.

NFKC folds compatibility variants (full-width letters, ligatures, circled digits) into their plain forms,
casefold() is the Unicode-aware lowercase (it also folds "ß" to "ss"), and every run of whitespace (any
Unicode space, tab or newline) becomes one ASCII space, with none at either end. Punctuation is kept: "Sort
the list." and "Sort the list!" are different texts to the exact signal, and only slightly different to the
fuzzy one.
"""

from __future__ import annotations

import hashlib
import unicodedata

__all__ = ["normalize_text", "text_digest"]


def normalize_text(text: str) -> str:
    """NFKC, casefold, collapse whitespace, strip."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_digest(normalized: str) -> bytes:
    """A 16-byte content hash of an already normalized text (what the exact-duplicate signal stores)."""
    return hashlib.blake2b(normalized.encode("utf-8", "surrogatepass"), digest_size=16).digest()
