"""agreement(): share of unanimous items, Cohen's kappa per reviewer pair, Fleiss' kappa, checked by hand."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.review.agreement import AgreementReport, PairKappa, Rating, agreement

A, R = "approve", "reject"


def table(rows: list[dict[str, str]]) -> list[Rating]:
    """Ratings from one {reviewer: label} row per item, items numbered from 1."""
    return [
        Rating(item, reviewer, label) for item, row in enumerate(rows, 1) for reviewer, label in row.items()
    ]


def pair(report: AgreementReport, a: str, b: str) -> PairKappa:
    (found,) = [p for p in report.pairs if (p.reviewer_a, p.reviewer_b) == (a, b)]
    return found


# --- hand-computed cases ----------------------------------------------------------------------------------------


def test_two_reviewers_by_hand() -> None:
    report = agreement(
        table([{"ann": A, "bob": A}, {"ann": A, "bob": R}, {"ann": R, "bob": R}, {"ann": R, "bob": R}])
    )
    # p_o = 3/4; ann approves 2 of 4, bob 1 of 4: p_e = (2·1 + 2·3) / 16 = 1/2; kappa = (3/4 - 1/2) / (1/2).
    assert report.pairs == [PairKappa("ann", "bob", items=4, kappa=0.5, observed=0.75)]
    assert report.mean_pairwise_kappa == 0.5
    assert (report.items, report.agreeing_items, report.agreement_share) == (4, 3, 0.75)
    assert (report.fleiss_kappa, report.fleiss_items, report.fleiss_raters) == (None, 0, None)


def test_three_reviewers_by_hand() -> None:
    report = agreement(
        table(
            [
                {"x": A, "y": A, "z": A},
                {"x": A, "y": A, "z": R},
                {"x": R, "y": R, "z": R},
                {"x": A, "y": R, "z": R},
            ]
        )
    )
    assert (report.items, report.agreeing_items, report.agreement_share) == (4, 2, 0.5)
    # x·y: 3 of 4 equal; x approves 3, y 2: p_e = (3·2 + 1·2) / 16 = 1/2, kappa = (3/4 - 1/2) / (1/2) = 1/2.
    # x·z: 2 of 4 equal; x approves 3, z 1: p_e = (3·1 + 1·3) / 16 = 3/8, kappa = (1/2 - 3/8) / (5/8) = 1/5.
    # y·z: 3 of 4 equal; y approves 2, z 1: p_e = (2·1 + 2·3) / 16 = 1/2, kappa = 1/2.
    assert [(p.reviewer_a, p.reviewer_b, p.items) for p in report.pairs] == [
        ("x", "y", 4),
        ("x", "z", 4),
        ("y", "z", 4),
    ]
    assert [p.kappa for p in report.pairs] == [pytest.approx(0.5), pytest.approx(0.2), pytest.approx(0.5)]
    assert [p.observed for p in report.pairs] == [0.75, 0.5, 0.75]
    assert report.mean_pairwise_kappa == pytest.approx(0.4)
    # Fleiss, m = 3: P_i = 1, 1/3, 1, 1/3 so P_bar = 2/3; 6 approvals of 12 so P_e = 1/2; kappa = (1/6) / (1/2).
    assert report.fleiss_kappa == pytest.approx(1 / 3)
    assert (report.fleiss_items, report.fleiss_raters) == (4, 3)


def test_cohen_fifty_items() -> None:
    # Both yes 20, a yes / b no 5, a no / b yes 10, both no 15.
    rows = [{"a": "yes", "b": "yes"}] * 20 + [{"a": "yes", "b": "no"}] * 5
    rows += [{"a": "no", "b": "yes"}] * 10 + [{"a": "no", "b": "no"}] * 15
    report = agreement(table(rows))
    # p_o = 35/50 = 0.7; a says yes 25/50, b 30/50: p_e = 0.5·0.6 + 0.5·0.4 = 0.5; kappa = 0.2 / 0.5 = 0.4.
    (only,) = report.pairs
    assert only.items == 50
    assert only.observed == pytest.approx(0.7)
    assert only.kappa == pytest.approx(0.4)
    assert report.agreeing_items == 35


def wikipedia_fleiss_rows() -> list[dict[str, str]]:
    # The worked example of the "Fleiss' kappa" Wikipedia article: 10 subjects, 14 raters, 5 categories; each
    # row counts the raters who chose categories 1..5. P_i = 1.000, .253, .308, .440, .330, .462, .242, .176,
    # .286, .286 (P_bar = 688/1820); p_j = .143, .200, .279, .150, .229 (P_e = 4170/19600); kappa = 0.210.
    counts = [
        (0, 0, 0, 0, 14),
        (0, 2, 6, 4, 2),
        (0, 0, 3, 5, 6),
        (0, 3, 9, 2, 0),
        (2, 2, 8, 1, 1),
        (7, 7, 0, 0, 0),
        (3, 2, 6, 3, 0),
        (2, 5, 3, 2, 2),
        (6, 5, 2, 1, 0),
        (0, 2, 2, 3, 7),
    ]
    rows = []
    for row in counts:
        assert sum(row) == 14
        labels = [f"category {j}" for j, n in enumerate(row, 1) for _ in range(n)]
        rows.append({f"rater {r:02d}": label for r, label in enumerate(labels)})
    return rows


def test_fleiss_wikipedia_example() -> None:
    report = agreement(table(wikipedia_fleiss_rows()))
    assert (report.fleiss_items, report.fleiss_raters) == (10, 14)
    assert round(report.fleiss_kappa, 3) == 0.210
    # (688/1820 - 4170/19600) / (1 - 4170/19600), in lowest terms.
    assert Fraction(688, 1820) - Fraction(4170, 19600) == Fraction(4211, 25480)
    assert report.fleiss_kappa == pytest.approx(4211 / 20059, abs=1e-12)
    assert report.items == 10
    assert report.agreeing_items == 1  # only the first subject is unanimous
    assert len(report.pairs) == 14 * 13 // 2


def test_fleiss_depends_only_on_the_counts_per_item() -> None:
    # Fleiss' kappa sees only the counts per item, so rotating which rater gave which answer changes nothing.
    rows = wikipedia_fleiss_rows()
    rotated = []
    for shift, row in enumerate(rows):
        labels = list(row.values())
        labels = labels[shift:] + labels[:shift]
        rotated.append({f"rater {r:02d}": label for r, label in enumerate(labels)})
    assert agreement(table(rotated)).fleiss_kappa == agreement(table(rows)).fleiss_kappa


# --- limits -----------------------------------------------------------------------------------------------------


def test_perfect_agreement() -> None:
    rows = [{"a": A, "b": A, "c": A}, {"a": R, "b": R, "c": R}, {"a": A, "b": A, "c": A}]
    report = agreement(table(rows))
    assert [(p.kappa, p.observed) for p in report.pairs] == [(1.0, 1.0)] * 3
    assert report.mean_pairwise_kappa == 1.0
    assert report.fleiss_kappa == 1.0
    assert report.agreement_share == 1.0


def test_systematic_disagreement_is_negative() -> None:
    rows = [{"a": A, "b": R}, {"a": R, "b": A}] * 5
    report = agreement(table(rows))
    (only,) = report.pairs
    # p_o = 0, p_e = 1/2: kappa = -1, the floor for two balanced raters.
    assert (only.kappa, only.observed) == (-1.0, 0.0)
    assert report.agreement_share == 0.0
    three = agreement(table([{"a": A, "b": A, "c": R}, {"a": R, "b": R, "c": A}] * 3))
    # Every item split 2:1, half approvals: P_bar = 1/3 < P_e = 1/2, kappa = -1/3.
    assert three.fleiss_kappa == pytest.approx(-1 / 3)
    assert three.mean_pairwise_kappa is not None and three.mean_pairwise_kappa < 0


def test_one_label_throughout_leaves_kappa_undefined() -> None:
    rows = [{"a": A, "b": A, "c": A}] * 4
    report = agreement(table(rows))
    assert [(p.kappa, p.observed, p.items) for p in report.pairs] == [(None, 1.0, 4)] * 3
    assert report.mean_pairwise_kappa is None
    # Fleiss is as undefined (P_e = 1) but says over what it was computed.
    assert (report.fleiss_kappa, report.fleiss_items, report.fleiss_raters) == (None, 4, 3)
    assert report.agreement_share == 1.0


def test_a_reviewer_who_always_approves_scores_zero() -> None:
    # Chance explains all of the agreement with someone who never varies, but the other one does: p_o = p_e.
    report = agreement(table([{"a": A, "b": A}, {"a": A, "b": R}, {"a": A, "b": A}]))
    (only,) = report.pairs
    assert only.kappa == 0.0
    assert only.observed == pytest.approx(2 / 3)


def test_mean_skips_undefined_pairs() -> None:
    rows = [{"a": A, "b": A}, {"a": A, "b": A}, {"b": A, "c": R}, {"b": R, "c": R}]
    report = agreement(table(rows))
    assert [p.kappa for p in report.pairs] == [None, 0.0]
    assert report.mean_pairwise_kappa == 0.0


def test_a_single_shared_item() -> None:
    report = agreement(table([{"a": A, "b": R}, {"a": A, "c": A}]))
    # With one item p_o = p_e = 0 when the labels differ (kappa 0) and p_e = 1 when they agree (undefined).
    assert report.pairs == [PairKappa("a", "b", 1, 0.0, 0.0), PairKappa("a", "c", 1, None, 1.0)]


def test_nothing_to_compare() -> None:
    empty = AgreementReport(
        items=0,
        agreeing_items=0,
        agreement_share=None,
        pairs=[],
        mean_pairwise_kappa=None,
        fleiss_kappa=None,
        fleiss_items=0,
        fleiss_raters=None,
    )
    assert agreement([]) == empty
    # Items rated by one reviewer each say nothing about agreement.
    assert agreement([Rating(1, "a", A), Rating(2, "b", R), Rating(3, "a", R)]) == empty
    assert agreement(iter([Rating(1, "a", A)])) == empty


# --- details, duplicates, names ---------------------------------------------------------------------------------


def test_different_edits_break_agreement_share_but_not_kappa() -> None:
    ratings = [
        Rating(1, "a", A, detail='{"output": "Paris."}'),
        Rating(1, "b", A, detail='{"output": "Paris"}'),
        Rating(2, "a", R),
        Rating(2, "b", R),
        Rating(3, "a", A),
        Rating(3, "b", A, detail='{"input": ""}'),  # an edit against no edit
        Rating(4, "a", A, detail="same"),
        Rating(4, "b", A, detail="same"),
    ]
    report = agreement(ratings)
    assert (report.items, report.agreeing_items, report.agreement_share) == (4, 2, 0.5)
    without_details = agreement([dataclasses.replace(r, detail=None) for r in ratings])
    assert without_details.agreement_share == 1.0
    assert report.pairs == without_details.pairs
    (only,) = report.pairs
    assert (only.kappa, only.observed) == (1.0, 1.0)


def test_the_last_of_duplicate_ratings_wins() -> None:
    ratings = [Rating(1, "a", A), Rating(1, "b", A), Rating(1, "a", R, detail="x"), Rating(2, "a", A)]
    report = agreement(ratings)
    assert (report.items, report.agreeing_items) == (1, 0)
    assert report.pairs == [PairKappa("a", "b", 1, 0.0, 0.0)]
    # A reviewer rating an item twice is still one rating of it.
    assert agreement([Rating(1, "a", A), Rating(1, "a", A)]).items == 0
    again = agreement([Rating(1, "a", A), Rating(1, "b", A), Rating(1, "c", R), Rating(1, "c", A)])
    assert (again.agreeing_items, again.fleiss_kappa, again.fleiss_raters) == (1, None, 3)


def test_pairs_are_sorted_by_name_whatever_the_input_order() -> None:
    ratings = [
        Rating(1, "zoe", A),
        Rating(1, "adam", R),
        Rating(1, "mia", A),
        Rating(2, "mia", A),
        Rating(2, "zoe", R),
    ]
    report = agreement(ratings)
    assert [(p.reviewer_a, p.reviewer_b, p.items) for p in report.pairs] == [
        ("adam", "mia", 1),
        ("adam", "zoe", 1),
        ("mia", "zoe", 2),
    ]


def test_labels_are_whatever_the_data_holds() -> None:
    rows = [{"a": "good", "b": "good"}, {"a": "bad", "b": "bad"}, {"a": "meh", "b": "meh"}]
    (only,) = agreement(table(rows)).pairs
    assert only.kappa == 1.0


# --- which items Fleiss' kappa uses ----------------------------------------------------------------------------


def test_fleiss_uses_the_most_common_count_of_three_or_more() -> None:
    three = {"a": A, "b": A, "c": R}
    four = {"a": A, "b": A, "c": A, "d": A}
    report = agreement(
        table([three, three, three, four, {"a": A, "b": R}, {"a": A, "b": R}, {"a": A, "b": R}])
    )
    # Three items rated by two people are the most common, but Fleiss needs at least three raters.
    assert (report.fleiss_items, report.fleiss_raters) == (3, 3)
    assert report.fleiss_kappa == agreement(table([three, three, three])).fleiss_kappa
    assert report.items == 7


def test_fleiss_takes_the_larger_count_on_a_tie() -> None:
    three = {"a": A, "b": A, "c": R}
    four = {"a": A, "b": R, "c": R, "d": R}
    report = agreement(table([three, four, three, four]))
    assert (report.fleiss_items, report.fleiss_raters) == (2, 4)
    # 2 items of 4: P_i = (1 + 9 - 4) / 12 = 1/2 each; 2 approvals of 8: P_e = 1/16 + 9/16 = 5/8.
    assert report.fleiss_kappa == pytest.approx((Fraction(1, 2) - Fraction(5, 8)) / (1 - Fraction(5, 8)))


def test_report_types_are_frozen_slotted_values() -> None:
    rating = Rating(1, "a", A)
    assert rating.detail is None
    values = [(rating, "label"), (PairKappa("a", "b", 1, None, 1.0), "kappa"), (agreement([]), "items")]
    for value, field in values:
        assert not hasattr(value, "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, 0)


# --- against the textbook formulas, and order independence --------------------------------------------------------


def textbook_cohen(pairs: list[tuple[str, str]]) -> float | None:
    n = len(pairs)
    p_o = sum(x == y for x, y in pairs) / n
    categories = {x for x, _ in pairs} | {y for _, y in pairs}
    p_e = sum((sum(x == c for x, _ in pairs) / n) * (sum(y == c for _, y in pairs) / n) for c in categories)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def textbook_fleiss(items: list[list[str]]) -> float | None:
    n, m = len(items), len(items[0])
    categories = sorted({label for item in items for label in item})
    counts = [[item.count(c) for c in categories] for item in items]
    p_bar = sum((sum(x * x for x in row) - m) / (m * (m - 1)) for row in counts) / n
    p = [sum(row[j] for row in counts) / (n * m) for j in range(len(categories))]
    p_e = sum(x * x for x in p)
    return None if p_e == 1 else (p_bar - p_e) / (1 - p_e)


reviewers = st.sampled_from(["ann", "bob", "cat", "dan", "eve"])
labels = st.sampled_from([A, R, "skip"])
details = st.sampled_from([None, None, "edit 1", "edit 2"])
ratings_strategy = st.lists(
    st.builds(Rating, st.integers(1, 8), reviewers, labels, details),
    max_size=40,
    unique_by=lambda r: (r.item_id, r.reviewer),
)


@given(ratings_strategy)
@settings(max_examples=300, deadline=None)
def test_matches_the_textbook_formulas(ratings: list[Rating]) -> None:
    report = agreement(ratings)
    by_item: dict[int, dict[str, str]] = {}
    for r in ratings:
        by_item.setdefault(r.item_id, {})[r.reviewer] = r.label
    shared = {item: row for item, row in by_item.items() if len(row) >= 2}
    assert report.items == len(shared)

    expected_pairs = []
    for a in sorted({r.reviewer for r in ratings}):
        for b in sorted({r.reviewer for r in ratings}):
            common = [(row[a], row[b]) for row in shared.values() if a < b and a in row and b in row]
            if common:
                expected_pairs.append((a, b, len(common), textbook_cohen(common)))
    assert len(report.pairs) == len(expected_pairs)
    for got, (a, b, n, kappa) in zip(report.pairs, expected_pairs, strict=True):
        assert (got.reviewer_a, got.reviewer_b, got.items) == (a, b, n)
        assert got.kappa == (None if kappa is None else pytest.approx(kappa, abs=1e-9))
        if got.kappa is not None:
            assert -1.0 - 1e-12 <= got.kappa <= 1.0 + 1e-12

    sizes = Counter(len(row) for row in shared.values() if len(row) >= 3)
    if not sizes:
        assert (report.fleiss_kappa, report.fleiss_items, report.fleiss_raters) == (None, 0, None)
    else:
        m = max(size for size in sizes if sizes[size] == max(sizes.values()))
        rows = [list(row.values()) for row in shared.values() if len(row) == m]
        expected = textbook_fleiss(rows)
        assert (report.fleiss_items, report.fleiss_raters) == (len(rows), m)
        assert report.fleiss_kappa == (None if expected is None else pytest.approx(expected, abs=1e-9))


@given(ratings_strategy, st.randoms(use_true_random=False))
@settings(max_examples=300, deadline=None)
def test_order_of_the_ratings_does_not_matter(ratings: list[Rating], rng: random.Random) -> None:
    shuffled = list(ratings)
    rng.shuffle(shuffled)
    assert agreement(shuffled) == agreement(ratings)


def test_order_of_the_ratings_does_not_matter_on_the_wikipedia_table() -> None:
    ratings = table(wikipedia_fleiss_rows())
    expected = agreement(ratings)
    rng = random.Random(1971)
    for _ in range(5):
        rng.shuffle(ratings)
        assert agreement(ratings) == expected
