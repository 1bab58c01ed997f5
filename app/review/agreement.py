"""How far reviewers agree with each other on the items several of them reviewed.

A dataset reviewed by k people per item is only as good as those people's agreement: a low kappa says the
guidelines are unclear or a reviewer is careless, long before the fine-tuned model says so. This module turns
the raw responses into three numbers: the plain share of items on which every reviewer gave the same answer
(verdict and edits), Cohen's kappa (1960) for each pair of reviewers, and Fleiss' kappa (1971) over the items
with the usual number of reviewers. Both kappas compare verdicts only and correct for the agreement that chance
alone would give; categories are whatever labels occur in the data.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from itertools import combinations

__all__ = ["AgreementReport", "PairKappa", "Rating", "agreement"]


@dataclass(frozen=True, slots=True)
class Rating:
    """One reviewer's response to one item: the verdict ("approve" / "reject") and, if they edited the item, a
    canonical string of their edits."""

    item_id: int
    reviewer: str
    label: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class PairKappa:
    """Cohen's kappa of two reviewers over the items both rated; None when chance agreement is already 1
    (both gave one and the same label throughout), where kappa is 0/0."""

    reviewer_a: str
    reviewer_b: str
    items: int
    kappa: float | None
    observed: float  # share of the shared items on which the two labels are equal


@dataclass(frozen=True, slots=True)
class AgreementReport:
    """Agreement over the items that at least two reviewers rated (an item rated once says nothing of it)."""

    items: int  # items with at least two ratings
    agreeing_items: int  # of those, items whose ratings all have the same label and the same detail
    agreement_share: float | None  # agreeing_items / items; None without such items
    pairs: list[PairKappa]  # every pair of reviewers with a shared item, sorted by (reviewer_a, reviewer_b)
    mean_pairwise_kappa: float | None  # mean of the defined pairwise kappas
    fleiss_kappa: float | None
    fleiss_items: int  # items Fleiss' kappa was computed over (all with exactly fleiss_raters ratings)
    fleiss_raters: int | None  # ratings per item in Fleiss' kappa; None without an item rated three times


def agreement(ratings: Iterable[Rating]) -> AgreementReport:
    """Agreement statistics of a set of ratings. A reviewer who rated an item twice counts once, with the
    rating that comes last."""
    by_item: dict[int, dict[str, Rating]] = defaultdict(dict)
    for rating in ratings:
        by_item[rating.item_id][rating.reviewer] = rating
    shared = [item for item in by_item.values() if len(item) >= 2]

    agreeing = sum(1 for item in shared if len({(r.label, r.detail) for r in item.values()}) == 1)
    pairs = _pairwise_kappas(shared)
    defined = [pair.kappa for pair in pairs if pair.kappa is not None]
    fleiss, fleiss_items, fleiss_raters = _fleiss(shared)
    return AgreementReport(
        items=len(shared),
        agreeing_items=agreeing,
        agreement_share=agreeing / len(shared) if shared else None,
        pairs=pairs,
        mean_pairwise_kappa=sum(defined) / len(defined) if defined else None,
        fleiss_kappa=fleiss,
        fleiss_items=fleiss_items,
        fleiss_raters=fleiss_raters,
    )


def _pairwise_kappas(items: list[dict[str, Rating]]) -> list[PairKappa]:
    # (label of the first reviewer, label of the second) for every item a pair shares, first < second.
    shared: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for item in items:
        for a, b in combinations(sorted(item), 2):
            shared[(a, b)].append((item[a].label, item[b].label))
    return [_cohen(a, b, labels) for (a, b), labels in sorted(shared.items())]


def _cohen(reviewer_a: str, reviewer_b: str, labels: list[tuple[str, str]]) -> PairKappa:
    n = len(labels)
    same = sum(1 for x, y in labels if x == y)
    marginal_a = Counter(x for x, _ in labels)
    marginal_b = Counter(y for _, y in labels)
    # In counts, to keep the undefined case exact: p_o = same / n, p_e = chance / n², and
    # kappa = (p_o - p_e) / (1 - p_e) = (n * same - chance) / (n² - chance).
    chance = sum(count * marginal_b[label] for label, count in marginal_a.items())
    kappa = None if chance == n * n else float(Fraction(n * same - chance, n * n - chance))
    return PairKappa(reviewer_a, reviewer_b, items=n, kappa=kappa, observed=same / n)


def _fleiss(items: list[dict[str, Rating]]) -> tuple[float | None, int, int | None]:
    """(kappa, items, raters per item) of Fleiss' kappa; it needs the same number of raters on every item, so
    it takes the most common count of three or more (the larger on a tie) and the items that have it."""
    sizes = Counter(len(item) for item in items if len(item) >= 3)
    if not sizes:
        return None, 0, None
    m = max(sizes, key=lambda size: (sizes[size], size))
    rows = [Counter(r.label for r in item.values()) for item in items if len(item) == m]
    n_items = len(rows)
    # P_i = (sum_j n_ij² - m) / (m (m - 1)) is the agreeing share of the rater pairs on item i; P_bar is its mean.
    p_bar = Fraction(sum(sum(c * c for c in row.values()) - m for row in rows), n_items * m * (m - 1))
    totals: Counter[str] = Counter()
    for row in rows:
        totals.update(row)
    # p_j = share of all ratings in category j; P_e = sum_j p_j².
    p_e = Fraction(sum(c * c for c in totals.values()), (n_items * m) ** 2)
    if p_e == 1:
        return None, n_items, m
    return float((p_bar - p_e) / (1 - p_e)), n_items, m
