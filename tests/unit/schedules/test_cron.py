"""Cron expressions in time zones (pure): what is accepted, when they fire across daylight saving, which
firings are due after a pause in the world, and how missed firings are counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.schedules.cron import MAX_FIRINGS_PER_CALL, CronError, Firing, parse_cron, plan_firings


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- what is accepted ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "timezone", "field", "says"),
    [
        ("61 * * * *", "UTC", "cron", "out of range"),
        ("* * *", "UTC", "cron", "5, 6 or 7 columns"),
        ("", "UTC", "cron", "empty"),
        ("every day", "UTC", "cron", "columns"),
        ("* * * * * * 2030", "UTC", "cron", "a year field is not supported"),
        ("R * * * *", "UTC", "cron", "random"),
        ("H * * * *", "UTC", "cron", "Hashed"),
        ("0 9 * * mon-xyz", "UTC", "cron", "xyz"),
        ("0 9 * * *", "Mars/Olympus_Mons", "timezone", "not an IANA time zone"),
        ("0 9 * * *", "../../etc/passwd", "timezone", "not an IANA time zone"),
        ("0 9 * * *", "", "timezone", "not an IANA time zone"),
    ],
)
def test_bad_expressions_and_zones_name_the_field(
    expression: str, timezone: str, field: str, says: str
) -> None:
    with pytest.raises(CronError) as caught:
        parse_cron(expression, timezone)
    assert caught.value.field == field
    assert says.lower() in caught.value.message.lower()


def test_an_expression_that_never_fires_is_refused_when_its_next_time_is_asked_for() -> None:
    cron = parse_cron("0 0 30 2 *")  # 30 February
    with pytest.raises(CronError, match="never fires") as caught:
        cron.next_after(utc(2026, 1, 1))
    assert caught.value.field == "cron"


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 * * * *", utc(2026, 1, 1, 10, 7), utc(2026, 1, 1, 10, 15)),
        ("0 9 * * 1-5", utc(2026, 1, 2, 10), utc(2026, 1, 5, 9)),  # Friday 10:00 -> Monday 09:00
        ("@daily", utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 2)),  # strictly after
        ("@hourly", utc(2026, 1, 1, 0, 59, 59, 999999), utc(2026, 1, 1, 1)),
        ("* * * * * *", utc(2026, 1, 1, 0, 0, 0, 500000), utc(2026, 1, 1, 0, 0, 1)),  # seconds, last field
        ("0 9 * * * 30", utc(2026, 1, 1), utc(2026, 1, 1, 9, 0, 30)),
        ("  */10 * * * *  ", utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 10)),
    ],
)
def test_next_fire_time(expression: str, after: datetime, expected: datetime) -> None:
    cron = parse_cron(expression)
    assert cron.next_after(after) == expected
    assert cron.expression == expression.strip()


def test_six_fields_mean_seconds_and_five_do_not() -> None:
    assert parse_cron("* * * * * *").has_seconds
    assert not parse_cron("* * * * *").has_seconds
    assert parse_cron("* * * * * *").upcoming(utc(2026, 1, 1), 3) == [
        utc(2026, 1, 1, 0, 0, 1),
        utc(2026, 1, 1, 0, 0, 2),
        utc(2026, 1, 1, 0, 0, 3),
    ]


# --- time zones and daylight saving ---------------------------------------------------------------------------


def test_nine_in_the_morning_in_shanghai_is_one_in_the_morning_utc() -> None:
    cron = parse_cron("0 9 * * *", "Asia/Shanghai")
    assert cron.timezone == "Asia/Shanghai"
    assert cron.upcoming(utc(2026, 6, 1), 3) == [utc(2026, 6, 1, 1), utc(2026, 6, 2, 1), utc(2026, 6, 3, 1)]
    # After 01:00 UTC (09:00 in Shanghai) the next one is tomorrow's.
    assert cron.next_after(utc(2026, 6, 1, 1)) == utc(2026, 6, 2, 1)


def test_a_daily_time_keeps_its_local_hour_across_the_spring_and_autumn_changes() -> None:
    """Europe/Paris: UTC+1 in winter, UTC+2 from 29 March 2026 to 25 October 2026."""
    cron = parse_cron("0 9 * * *", "Europe/Paris")
    assert cron.upcoming(utc(2026, 3, 27, 12), 3) == [
        utc(2026, 3, 28, 8),  # 09:00 CET
        utc(2026, 3, 29, 7),  # 09:00 CEST: the day the clocks go forward
        utc(2026, 3, 30, 7),
    ]
    assert cron.upcoming(utc(2026, 10, 24, 12), 2) == [utc(2026, 10, 25, 8), utc(2026, 10, 26, 8)]


def test_a_local_time_the_spring_change_skips_fires_once_at_the_end_of_the_gap() -> None:
    """America/New_York, 8 March 2026: 02:00 EST becomes 03:00 EDT, so 02:30 does not exist that night."""
    cron = parse_cron("30 2 * * *", "America/New_York")
    assert cron.upcoming(utc(2026, 3, 7, 12), 3) == [
        utc(2026, 3, 8, 7),  # 03:00 EDT, the first moment after the gap
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
        utc(2026, 3, 10, 6, 30),
    ]


def test_a_local_time_the_autumn_change_repeats_fires_once() -> None:
    """America/New_York, 1 November 2026: 02:00 EDT becomes 01:00 EST, so 01:30 happens twice."""
    cron = parse_cron("30 1 * * *", "America/New_York")
    assert cron.upcoming(utc(2026, 10, 31, 12), 3) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT; not again at 01:30 EST (06:30 UTC)
        utc(2026, 11, 2, 6, 30),  # 01:30 EST
        utc(2026, 11, 3, 6, 30),
    ]
    # Asked from within the repeated hour, it does not fire the repeat either.
    assert cron.next_after(utc(2026, 11, 1, 6)) == utc(2026, 11, 2, 6, 30)


def test_an_hourly_schedule_fires_in_every_real_hour_across_both_changes() -> None:
    cron = parse_cron("0 * * * *", "America/New_York")
    autumn = cron.upcoming(utc(2026, 11, 1, 3, 30), 5)
    assert autumn == [utc(2026, 11, 1, h) for h in (4, 5, 6, 7, 8)]  # 00:00 EDT, 01:00 EDT, 01:00 EST, ...
    spring = cron.upcoming(utc(2026, 3, 8, 5, 30), 3)
    assert spring == [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]  # 01:00 EST, 03:00 EDT, ...
    # Every step is exactly one real hour: nothing skipped, nothing doubled.
    for earlier, later in zip(autumn, autumn[1:], strict=False):
        assert later - earlier == timedelta(hours=1)


# --- due times and coalescing ---------------------------------------------------------------------------------


EVERY_FIVE = parse_cron("*/5 * * * *")


def test_nothing_is_due_before_the_next_fire_time() -> None:
    plan = plan_firings(EVERY_FIVE, utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 0, 4, 59), coalesce=True)
    assert plan.firings == [] and plan.next_fire_at == utc(2026, 1, 1, 0, 5)


def test_a_fire_time_is_due_at_that_very_moment() -> None:
    plan = plan_firings(EVERY_FIVE, utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 0, 5), coalesce=True)
    assert plan.firings == [Firing(utc(2026, 1, 1, 0, 5), 1)]
    assert plan.next_fire_at == utc(2026, 1, 1, 0, 10) and plan.complete


def test_missed_firings_coalesce_into_one_at_the_latest_due_time() -> None:
    """Down from 00:05 until 00:31: 00:05, 00:10, ..., 00:30 were due (6 of them)."""
    plan = plan_firings(EVERY_FIVE, utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 0, 31), coalesce=True)
    assert plan.firings == [Firing(utc(2026, 1, 1, 0, 30), 6)]
    assert plan.next_fire_at == utc(2026, 1, 1, 0, 35)
    assert plan.complete


def test_without_coalescing_each_missed_firing_is_its_own_a_bounded_number_per_call() -> None:
    plan = plan_firings(EVERY_FIVE, utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 0, 31), coalesce=False)
    assert plan.firings == [Firing(utc(2026, 1, 1, 0, m), 1) for m in (5, 10, 15, 20, 25, 30)]
    assert plan.next_fire_at == utc(2026, 1, 1, 0, 35)
    # A long outage: the first MAX_FIRINGS_PER_CALL now, the rest from where they stopped.
    long = plan_firings(EVERY_FIVE, utc(2026, 1, 1, 0, 5), utc(2026, 1, 2), coalesce=False)
    assert len(long.firings) == MAX_FIRINGS_PER_CALL
    assert long.next_fire_at == long.firings[-1].fire_time + timedelta(minutes=5)
    rest = plan_firings(EVERY_FIVE, long.next_fire_at, utc(2026, 1, 2), coalesce=False)
    assert rest.firings[0].fire_time == long.next_fire_at


def test_coalescing_counts_per_second_firings_exactly_and_stops_counting_at_its_cap() -> None:
    every_second = parse_cron("* * * * * *")
    start = utc(2026, 1, 1)
    plan = plan_firings(every_second, start, start + timedelta(seconds=99, milliseconds=400), coalesce=True)
    assert plan.firings == [Firing(start + timedelta(seconds=99), 100)]
    assert plan.next_fire_at == start + timedelta(seconds=100)
    # A day down: counting stops at the cap, but the run still answers the latest due second.
    capped = plan_firings(every_second, start, start + timedelta(days=1), coalesce=True, max_counted=500)
    assert capped.firings == [Firing(start + timedelta(days=1), 500)]
    assert not capped.complete
    assert capped.next_fire_at == start + timedelta(days=1, seconds=1)


def test_coalescing_across_the_autumn_change_counts_each_real_firing_once() -> None:
    """A daily 01:30 in New York, down from 31 October to 3 November 2026 (the repeated 01:30 not counted)."""
    cron = parse_cron("30 1 * * *", "America/New_York")
    first = utc(2026, 10, 31, 5, 30)  # 01:30 EDT
    plan = plan_firings(cron, first, utc(2026, 11, 3, 12), coalesce=True)
    assert plan.firings == [Firing(utc(2026, 11, 3, 6, 30), 4)]  # 31 Oct, 1, 2, 3 Nov
    assert plan.next_fire_at == utc(2026, 11, 4, 6, 30)
