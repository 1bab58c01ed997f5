"""An exact ROUGE-L nearest-neighbour index with prefix and positional filtering (All-Pairs / PPJoin style).

For a query token sequence it finds the stored entry with the highest ROUGE-L F1, and that F1, whenever it is
at least a floor `min_score`. The answer is exact: pruning only skips entries whose F1 provably lies below the
floor.

Why the pruning is exact (m = query length, n = entry length, L = their LCS, O = their multiset token overlap;
s = min_score - PRUNE_SLACK, the slack absorbing the few ulps by which the float formula can differ from the
rational 2L/(m+n)):

1. F1 = 2L/(m+n) and L <= O <= min(m, n). An entry can reach the floor only if O >= L >= s(m+n)/2.
2. Length bound: n >= O >= s(m+n)/2 gives n >= s*m/(2-s); symmetrically n <= m*(2-s)/s.
3. Minimum overlap: from 1 and 2, O >= s*m/(2-s) =: alpha(m), and likewise O >= alpha(n).
4. Multisets become sets by numbering repeats: the k-th "the" of a text is the element ("the", k), so O is the
   size of a set intersection. Every set is sorted by one global total order (rare elements first).
5. Prefix filter: let c be the first common element in the global order. Every common element comes at or
   after c, so O <= m - pos_Q(c); with O >= alpha(m), c lies within Q's first m - alpha(m) + 1 elements, and
   likewise within E's first n - alpha(n) + 1. So indexing only each entry's prefix and probing only the
   query's prefix finds every entry that can reach the floor.
6. Positional filter: if c sits at 0-based position i in Q and j in E, then O <= min(m - i, n - j). A later
   common element has larger positions on both sides, hence a smaller bound; so each (i, j) match can be
   tested on its own before matches are grouped by entry: if the first match fails, all fail. This bound
   implies the length bound. Positions are stored capped; a smaller j only loosens the bound.
7. An element held by no entry (not in the order at all) cannot be common with an entry, so the query may put
   such elements first: their place is irrelevant to 5 and 6, and the probed part shrinks.

Survivors are scored exactly: rapidfuzz's LCSseq on code-point strings gives the integer LCS, then
`f1_from_lcs_array` applies rouge-score's float formula. Ties go to the entry added first.

The global order must not change while entries are indexed under it, yet the best order (by frequency) is only
known as data arrives. So an element gets its rank when an entry first holds it, from the frequency estimated
then (its count in the index, plus its count in texts announced with `prime`), newer first among equals, and
keeps it; the prefix index is rebuilt under fresh estimates whenever it has grown by `rebuild_growth`, which
keeps the total rebuild work a constant factor of the insert work. The order steers speed, never a result.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from app.dedup.rouge import f1_from_lcs_array

__all__ = ["PRUNE_SLACK", "RougeBlock", "RougeLIndex"]

# Slack below the floor, on the rational value 2L/(m+n): far larger than the float formula's rounding error
# (a few times 1e-16), and too small to cost any pruning. It only ever loosens a bound.
PRUNE_SLACK = 1e-9
# Tolerance for float comparisons of integer counts against real-valued bounds (loosens, never tightens).
_BOUND_TOL = 1e-7
_POS_BITS = 24
_POS_MASK = (1 << _POS_BITS) - 1
_PAIR_SHIFT = 40  # (query number << 40 | entry id) names a candidate pair inside one block
# Token codes: code point 0 means "a token the index has never seen"; real tokens get 1, 2, ..., skipping the
# surrogate block. Past the end of Unicode (over a million distinct tokens) codes become ints, and a sequence
# holding one becomes a list of ints, which rapidfuzz compares with strings by value.
_UNKNOWN = "\x00"
_MAX_CODE_POINT = 0x10FFFF
# A rank is (estimated frequency << 40 | tie-break); tie-breaks count down from 2**40 - 1.
_RANK_SHIFT = 40
_SERIAL_MASK = (1 << _RANK_SHIFT) - 1
# Below this many pairs, rapidfuzz's thread start-up costs more than it saves.
_PARALLEL_PAIRS = 4096

Element = Hashable  # see _elements
Seq = str | list[int]


def _min_overlap(length: int, s: float) -> int:
    """alpha(length): the least multiset overlap any partner reaching the floor must have (at least 1)."""
    if s <= 0:
        return 1
    return max(1, math.ceil(s * length / (2.0 - s) - _BOUND_TOL))


def _elements(seq: Seq) -> list[Element]:
    """The set of (token, k) elements of a sequence, as hashable keys.

    A first occurrence is the bare code (a 1-char str while codes are code points); the k-th repeat is the
    code followed by chr(k). Strings, not tuples, because dicts keyed by strings are invisible to the cyclic
    garbage collector, whose full passes would otherwise pause every thread for longer as the index grows.
    """
    if not isinstance(seq, str):
        seq = [chr(c) if c <= _MAX_CODE_POINT else c for c in seq]  # type: ignore[misc]
    counts = Counter(seq)
    out: list[Element] = list(counts)
    out.extend([_repeat(c, k) for c, n in counts.items() if n > 1 for k in range(1, n)])
    return out


def _repeat(code: str | int, k: int) -> Element:
    if isinstance(code, str) and k <= _MAX_CODE_POINT:
        return code + chr(k)
    return (code, k)


def _base(element: Element) -> str | int:
    """The token code of an element."""
    return element[0] if isinstance(element, str | tuple) else element  # type: ignore[return-value]


def _key(seq: Seq) -> str | tuple[int, ...]:
    return seq if isinstance(seq, str) else tuple(seq)


class _GrowableInt64:
    """An append-only int64 column that NumPy can index without copying."""

    __slots__ = ("_data", "_size")

    def __init__(self) -> None:
        self._data = np.zeros(1024, dtype=np.int64)
        self._size = 0

    def append(self, value: int) -> None:
        if self._size == len(self._data):
            grown = np.zeros(2 * len(self._data), dtype=np.int64)
            grown[: self._size] = self._data
            self._data = grown
        self._data[self._size] = value
        self._size += 1

    def view(self) -> np.ndarray:
        return self._data[: self._size]

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes)


@dataclass
class _Query:
    """A query ready for probing: its codes, its length and the known elements of its prefix."""

    seq: Seq
    m: int
    same: int | None  # entry id of an identical stored sequence
    absent: int  # elements held by no entry (they sort first, point 7)
    probe: list[Element]  # known elements within the prefix, in global order


class RougeBlock:
    """The ROUGE-L side of one block of queries, for a greedy caller.

    `index_best[q]` is query q's best match in the index as it was when the block was searched, (entry id,
    F1), or None when nothing reaches the floor. Members the caller keeps are registered with `keep`;
    `best_within(q)` then scores q against every kept member that passes the length bound (point 2). A block
    has a few dozen members, so this brute force is cheaper than filtering. Nothing here changes the index.
    """

    def __init__(
        self, queries: list[_Query], index_best: list[tuple[int, float] | None], s: float, floor: float
    ):
        self.index_best = index_best
        self._queries = queries
        self._s = s
        self._floor = floor
        self._kept: list[int] = []

    def keep(self, q: int) -> None:
        """Make member q a possible match for the members checked after it."""
        if self._queries[q].m:
            self._kept.append(q)

    def best_within(self, q: int) -> tuple[int, float] | None:
        """(member, F1) of q's best match among kept members (earliest on ties), if it reaches the floor."""
        m = self._queries[q].m
        if m == 0 or not self._kept:
            return None
        queries, s = self._queries, self._s
        if s > 0:
            lo = s * m / (2.0 - s) - _BOUND_TOL
            hi = m * (2.0 - s) / s + _BOUND_TOL
            members = [o for o in self._kept if lo <= queries[o].m <= hi]
        else:
            members = list(self._kept)
        if not members:
            return None
        lcs = process.cdist([queries[q].seq], [queries[o].seq for o in members], scorer=LCSseq.similarity)
        f1 = f1_from_lcs_array(lcs[0], m, np.asarray([queries[o].m for o in members], dtype=np.int64))
        at = int(np.argmax(f1))
        score = float(f1[at])
        return (members[at], score) if score > 0.0 and score >= self._floor else None


class RougeLIndex:
    """Token sequences in insertion order (entry ids 0, 1, 2, ...), searchable for their best ROUGE-L match.

    Not thread-safe by itself: `NearDuplicateIndex` serialises access with its lock.
    """

    def __init__(self, min_score: float, *, rebuild_growth: float = 2.0, first_rebuild: int = 2048) -> None:
        if rebuild_growth <= 1.0:
            raise ValueError("rebuild_growth must be greater than 1")
        self.min_score = float(min_score)
        self._s = self.min_score - PRUNE_SLACK
        self._rebuild_growth = rebuild_growth
        self._vocab: dict[str, str | int] = {}
        self._seqs: list[Seq] = []
        self._lengths = _GrowableInt64()
        self._first_with_seq: dict[str | tuple[int, ...], int] = {}
        self._df: Counter[Element] = Counter()  # element -> entries holding it
        self._prior: Counter[str | int] = Counter()  # token code -> occurrences in primed texts
        # element -> its place in the global order, as (estimated frequency << 40 | tie-break). Fixed once
        # given (until a rebuild), unique, and only for elements some entry holds.
        self._rank: dict[Element, int] = {}
        self._serial = 0  # tie-breaks come from one counter, so no two ranks are ever equal
        # element -> packed little-endian int64 (entry id << 24 | position) for entry prefixes. bytearray, not
        # array.array: arrays are tracked by the garbage collector, bytearrays are not.
        self._postings: dict[Element, bytearray] = {}
        self._next_rebuild = first_rebuild
        self._primed_texts = 0
        self.rebuilds = 0

    def __len__(self) -> int:
        return len(self._seqs)

    # --- encoding -----------------------------------------------------------------------------------------

    @staticmethod
    def _code_for(number: int) -> str | int:
        point = number if number < 0xD800 else number + 0x800
        return chr(point) if point <= _MAX_CODE_POINT else point

    def _new_code(self, token: str) -> str | int:
        code = self._vocab[token] = self._code_for(len(self._vocab) + 1)
        return code

    @staticmethod
    def _join(codes: list[str | int]) -> Seq:
        try:
            return "".join(codes)  # type: ignore[arg-type]
        except TypeError:  # an int code: more distinct tokens than code points
            return [c if isinstance(c, int) else ord(c) for c in codes]

    def encode(self, tokens: Sequence[str], *, grow: bool) -> Seq:
        """The code sequence of a token list.

        With `grow`, unseen tokens join the vocabulary (needed for anything that may be added, or compared
        with other new texts); without it they all become code 0, which no entry holds, and nothing changes.
        """
        codes = list(map(self._vocab.get, tokens))
        if None in codes:
            for at, code in enumerate(codes):
                if code is None:
                    token = tokens[at]
                    codes[at] = (self._vocab.get(token) or self._new_code(token)) if grow else _UNKNOWN
        return self._join(codes)

    # --- insertion ----------------------------------------------------------------------------------------

    def add(self, tokens: Sequence[str]) -> int:
        """Store one token sequence; returns its entry id."""
        return self.add_seq(self.encode(tokens, grow=True))

    def add_seq(self, seq: Seq) -> int:
        """Store a sequence made by `encode(..., grow=True)`; returns its entry id."""
        eid = len(self._seqs)
        self._seqs.append(seq)
        self._lengths.append(len(seq))
        if seq:
            self._first_with_seq.setdefault(_key(seq), eid)
            elements = _elements(seq)
            self._df.update(elements)
            rank = self._rank
            new = [e for e in elements if e not in rank]
            if new:
                prior = self._prior
                for e in new:  # rarer first; among equals, newer first (new tokens tend to stay rare)
                    self._serial += 1
                    estimate = 1 + prior.get(_base(e), 0)
                    rank[e] = (estimate << _RANK_SHIFT) | (_SERIAL_MASK - self._serial)
            self._index_prefix(eid, elements)
        if len(self._seqs) >= self._next_rebuild:
            self.rebuild()
        return eid

    def _index_prefix(self, eid: int, elements: list[Element]) -> None:
        n = len(elements)
        elements.sort(key=self._rank.__getitem__)
        postings = self._postings
        base = eid << _POS_BITS
        for j, e in enumerate(elements[: n - _min_overlap(n, self._s) + 1]):
            plist = postings.get(e)
            if plist is None:
                plist = postings[e] = bytearray()
            plist += (base | (j if j < _POS_MASK else _POS_MASK)).to_bytes(8, "little")

    def prime(self, seqs: Iterable[Seq]) -> None:
        """Learn token frequencies from texts about to be checked, then re-freeze the order with them.

        Token occurrences (not per-element document frequencies) are enough: the order only steers speed.
        """
        prior = self._prior
        for seq in seqs:
            # Keyed like _base(element): code points as 1-char strings, even inside an int-list sequence.
            prior.update(
                seq if isinstance(seq, str) else [chr(c) if c <= _MAX_CODE_POINT else c for c in seq]
            )
            self._primed_texts += 1
        self.rebuild()

    def rebuild(self) -> None:
        """Freeze a fresh global order (rarest first) from the known frequencies and re-index every prefix.

        Written so that no single C call runs long (a big `sorted(key=...)` would hold the GIL throughout):
        keys are built by generators and sorted by NumPy, which releases the GIL, so threads sharing the
        interpreter (the service's event loop) keep running while a large index is rebuilt.
        """
        self.rebuilds += 1
        df, prior, old = self._df, self._prior, self._rank
        elements = list(df)
        counts = np.fromiter(
            (df[e] + prior.get(_base(e), 0) for e in elements),
            np.int64,
            len(elements),
        )
        previous = np.fromiter((old[e] & _SERIAL_MASK for e in elements), np.int64, len(elements))
        # By frequency, then by the previous tie-break (kept stable: a high tie-break sorts first).
        order = np.lexsort((-previous, counts)).tolist()
        rank: dict[Element, int] = {}
        for at in reversed(order):
            self._serial += 1
            rank[elements[at]] = (int(counts[at]) << _RANK_SHIFT) | (_SERIAL_MASK - self._serial)
        self._rank = rank
        self._postings = {}
        for eid, seq in enumerate(self._seqs):
            if seq:
                self._index_prefix(eid, _elements(seq))
        # Frequencies learnt from primed texts stay valid until the index outgrows them.
        size = max(len(self._seqs), self._primed_texts)
        self._next_rebuild = max(self._next_rebuild, math.ceil(size * self._rebuild_growth))

    # --- search -------------------------------------------------------------------------------------------

    def best(self, tokens: Sequence[str]) -> tuple[int | None, float]:
        """(entry id, F1) of the best match if its F1 >= min_score and > 0, else (None, 0.0)."""
        found = self.search_block([self.encode(tokens, grow=False)]).index_best[0]
        return found if found is not None else (None, 0.0)

    def _prepare(self, seq: Seq) -> _Query:
        m = len(seq)
        if m == 0:
            return _Query(seq, 0, None, 0, [])
        same = self._first_with_seq.get(_key(seq))
        if same is not None:
            return _Query(seq, m, same, 0, [])
        rank = self._rank
        known = [e for e in _elements(seq) if e in rank]
        known.sort(key=rank.__getitem__)
        absent = m - len(known)
        prefix_len = m - _min_overlap(m, self._s) + 1
        return _Query(seq, m, None, absent, known[: max(0, prefix_len - absent)])

    def search_block(self, seqs: Sequence[Seq]) -> RougeBlock:
        """Best index match of each encoded query, against the index as it is now (nothing is added)."""
        queries = [self._prepare(seq) for seq in seqs]
        index_best: list[tuple[int, float] | None] = [None] * len(queries)
        # Gather the postings of every query's probe elements at once.
        packed = bytearray()
        probe_q: list[int] = []
        probe_i: list[int] = []
        counts: list[int] = []
        postings = self._postings
        for qn, q in enumerate(queries):
            if q.same is not None:  # identical tokens: F1 = 1.0, which no other entry can beat or tie
                index_best[qn] = (q.same, 1.0) if self.min_score <= 1.0 else None
                continue
            for i, plist in enumerate(map(postings.get, q.probe), start=q.absent):
                if plist:
                    packed += plist
                    probe_i.append(i)
                    counts.append(len(plist) >> 3)
            probe_q.extend(repeat(qn, len(probe_i) - len(probe_q)))
        pairs = self._filter_postings(queries, packed, probe_q, probe_i, counts)
        if pairs.size:
            pair_q = (pairs >> _PAIR_SHIFT).tolist()
            pair_e = (pairs & ((1 << _PAIR_SHIFT) - 1)).tolist()
            seq_of = self._seqs
            f1 = self._score(queries, pair_q, [seq_of[e] for e in pair_e], self._lengths.view()[pair_e])
            self._pick_best(index_best, pair_q, pair_e, f1)
        return RougeBlock(queries, index_best, self._s, self.min_score)

    def _filter_postings(
        self,
        queries: list[_Query],
        packed: bytearray,
        probe_q: list[int],
        probe_i: list[int],
        counts: list[int],
    ) -> np.ndarray:
        """Sorted distinct (query << 40 | entry) pairs that pass the positional filter (points 5 and 6)."""
        if not counts:
            return np.zeros(0, dtype=np.int64)
        values = np.frombuffer(packed, dtype="<i8").astype(np.int64, copy=False)
        count_arr = np.asarray(counts, dtype=np.int64)
        qn = np.repeat(np.asarray(probe_q, dtype=np.int64), count_arr)
        qi = np.repeat(np.asarray(probe_i, dtype=np.int64), count_arr)
        m = np.asarray([q.m for q in queries], dtype=np.int64)[qn]
        entry = values >> _POS_BITS
        n = self._lengths.view()[entry]
        upper = np.minimum(m - qi, n - (values & _POS_MASK))
        ok = upper >= self._s * (m + n) * 0.5 - _BOUND_TOL
        keys = np.sort((qn[ok] << _PAIR_SHIFT) | entry[ok])
        if keys.size > 1:
            keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
        return keys

    @staticmethod
    def _score(queries: list[_Query], pair_q: list[int], others: list[Seq], pair_n: np.ndarray) -> np.ndarray:
        """Exact rouge-score F1 of every candidate pair."""
        firsts = [queries[q].seq for q in pair_q]
        workers = -1 if len(pair_q) >= _PARALLEL_PAIRS else 1
        lcs = process.cpdist(firsts, others, scorer=LCSseq.similarity, dtype=np.int32, workers=workers)
        m = np.asarray([queries[q].m for q in pair_q], dtype=np.int64)
        return f1_from_lcs_array(lcs, m, pair_n)

    def _pick_best(
        self, best: list[tuple[int, float] | None], pair_q: list[int], pair_e: list[int], f1: np.ndarray
    ) -> None:
        """Per query, the highest F1 (earliest entry on ties) if it reaches the floor and is positive."""
        q = np.asarray(pair_q, dtype=np.int64)
        starts = np.flatnonzero(np.concatenate(([True], q[1:] != q[:-1])))
        top = np.maximum.reduceat(f1, starts)
        group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(q))))
        tops = np.flatnonzero(f1 == top[group])
        # Pairs are sorted by (query, entry id), so a group's first top pair is its earliest entry.
        top_groups = group[tops]
        firsts = tops[np.concatenate(([True], top_groups[1:] != top_groups[:-1]))]
        for at in firsts.tolist():
            score = float(f1[at])
            if score > 0.0 and score >= self.min_score:
                best[pair_q[at]] = (pair_e[at], score)

    # --- introspection (tests, benchmarks) ---------------------------------------------------------------

    def memory_estimate(self) -> dict[str, int]:
        """Rough bytes held by the postings and the sequences (for the benchmark's explanation)."""
        postings = sum(len(p) for p in self._postings.values())
        seqs = sum(len(s) * (2 if isinstance(s, str) else 8) for s in self._seqs)
        return {"postings": postings, "sequences": seqs, "lengths": self._lengths.nbytes}
