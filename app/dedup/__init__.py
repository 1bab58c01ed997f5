"""Near-duplicate detection: exact ROUGE-L with exact pruning, plus exact-text, fuzzy and semantic signals.

Pure logic (no I/O). `NearDuplicateIndex` is the entry point; `Embedder` is the protocol an embedding model
(app/embeddings.py) satisfies for the opt-in semantic signal.
"""

from app.dedup.fuzzy import FUZZY_SCORERS
from app.dedup.index import SIGNALS, DuplicateCheck, NearDuplicateIndex
from app.dedup.semantic import Embedder

__all__ = ["FUZZY_SCORERS", "SIGNALS", "DuplicateCheck", "Embedder", "NearDuplicateIndex"]
