"""Cron expressions read in an IANA time zone: validation, the next fire times, and which firings are due.

Pure: no I/O, no clock of its own (every function is told the time). croniter does the parsing and the
calendar arithmetic; this module only decides what Sprout accepts and how firings are counted:

- 5 fields (minute hour day month weekday), or 6 with seconds as a sixth field at the end (croniter's order:
  `0 9 * * 1-5 30` is 09:00:30 on weekdays; `* * * * * *` is every second), or an alias such as `@daily`.
  A seventh (year) field, `R` (random: every process would draw its own times) and `H` (hashed) are refused.
- Times are computed in the schedule's zone with tz-aware datetimes and returned in UTC, so daylight saving is
  the zone's: a local time the clock skips (02:30 on the spring-forward night) fires at the first moment after
  the gap; a local time the clock shows twice (the hour given back in autumn) fires once, the first time,
  unless the schedule runs every hour (hour field `*`), which fires in both real hours.
- Firings missed while nothing ran are due all at once: coalesced into one firing (the latest due time,
  standing for all of them), or one firing each, a bounded number per call.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, CroniterError, croniter
from croniter.croniter import field_re, hash_expression_re

# Firings counted at most when coalescing (a per-second schedule down for a day would be 86,400): beyond it the
# run still answers the latest due time, and `coalesced` is a floor.
MAX_COUNTED = 10_000
# Firings one call makes for a schedule that does not coalesce; the rest wait for the next call.
MAX_FIRINGS_PER_CALL = 20
# Candidate times skipped in a row before giving up (a repeated autumn hour of a per-second schedule is 3,600).
_MAX_SKIPPED = 10_000


class CronError(ValueError):
    """An expression or zone Sprout cannot use; `field` is "cron" or "timezone" (a 422 naming it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def parse_zone(name: str) -> ZoneInfo:
    """An IANA zone by name ("UTC", "Asia/Shanghai"); CronError naming `timezone` otherwise."""
    if name not in _zones():
        raise CronError(
            "timezone", f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Paris, Asia/Shanghai)"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError("timezone", f"{name!r}: {exc}") from None


@dataclass(frozen=True)
class Cron:
    """A validated expression in its zone. Times in and out are aware datetimes; out, always UTC."""

    expression: str
    zone: ZoneInfo
    has_seconds: bool
    every_hour: bool  # hour field `*`: a repeated autumn hour is a real hour, and fires too

    @property
    def timezone(self) -> str:
        return self.zone.key

    def times_after(self, after: datetime) -> Iterator[datetime]:
        """Fire times strictly after `after`, in UTC, in order, each once."""
        iterator = croniter(self.expression, after.astimezone(self.zone))
        last = after.astimezone(UTC)
        skipped = 0
        while True:
            try:
                moment = iterator.get_next(datetime).astimezone(UTC)
            except CroniterBadDateError:
                raise CronError("cron", f"{self.expression!r} never fires") from None
            # A DST edge may hand back a time already passed; a repeated autumn hour is skipped (see above).
            if moment <= last or self._repeats_a_wall_time(moment):
                skipped += 1
                if skipped > _MAX_SKIPPED:
                    raise CronError(
                        "cron", f"{self.expression!r}: no usable fire time after {after.isoformat()}"
                    )
                continue
            skipped = 0
            last = moment
            yield moment

    def _repeats_a_wall_time(self, moment: datetime) -> bool:
        """The second showing of a wall-clock time in the hour DST gives back, for schedules with fixed hours."""
        return not self.every_hour and moment.astimezone(self.zone).fold == 1

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after `after` (UTC)."""
        return next(self.times_after(after))

    def upcoming(self, after: datetime, n: int) -> list[datetime]:
        """The next `n` fire times strictly after `after`."""
        found: list[datetime] = []
        for moment in self.times_after(after):
            found.append(moment)
            if len(found) == n:
                break
        return found

    def last_at_or_before(self, moment: datetime, *, not_before: datetime) -> datetime:
        """The latest fire time at or before `moment` and not before `not_before` (itself a fire time)."""
        iterator = croniter(self.expression, (moment + timedelta(microseconds=1)).astimezone(self.zone))
        for _ in range(_MAX_SKIPPED):
            found = iterator.get_prev(datetime).astimezone(UTC)
            if found <= not_before:
                return not_before
            if found <= moment and not self._repeats_a_wall_time(found):
                return found
        return not_before


def parse_cron(expression: str, timezone: str = "UTC") -> Cron:
    """Validate with croniter: 5 or 6 fields (seconds last) or an alias, in an IANA zone. CronError otherwise."""
    zone = parse_zone(timezone)
    text = expression.strip()
    if not text:
        raise CronError("cron", "empty expression")
    for field in field_re.findall(text.lower()):
        found = hash_expression_re.match(field)
        if found and found.group("hash_type") == "r":
            raise CronError(
                "cron", f"{field!r}: random fields (R) are not supported: every process would draw its own"
            )
    try:
        expanded, _ = croniter.expand(text)
    except CroniterError as exc:
        raise CronError("cron", f"{text!r}: {str(exc).strip().splitlines()[-1]}") from None
    if len(expanded) not in (5, 6):
        raise CronError(
            "cron", f"{text!r}: use 5 fields, or 6 with seconds last (a year field is not supported)"
        )
    hours = expanded[1]
    return Cron(expression=text, zone=zone, has_seconds=len(expanded) == 6, every_hour=hours == ["*"])


@dataclass(frozen=True)
class Firing:
    fire_time: datetime  # UTC: the cron time this firing answers, part of its unique key
    coalesced: int  # the due fire times it stands for (a floor when `complete` is False)


@dataclass(frozen=True)
class Plan:
    """What one call fires for one schedule, and where the schedule's next fire time goes afterwards."""

    firings: list[Firing]
    next_fire_at: datetime
    complete: bool = True  # False: more fire times were due than counted (coalesced holds MAX_COUNTED)


def plan_firings(
    cron: Cron,
    next_fire_at: datetime,
    now: datetime,
    *,
    coalesce: bool,
    max_firings: int = MAX_FIRINGS_PER_CALL,
    max_counted: int = MAX_COUNTED,
) -> Plan:
    """The firings due at `now` for a schedule whose next fire time is `next_fire_at`: the due times run from
    `next_fire_at` to the last fire time at or before `now`.

    Coalescing: one firing at the latest due time standing for all n of them. Otherwise one firing each,
    at most `max_firings`; the next fire time is then the first one not fired, so the next call goes on."""
    if next_fire_at > now:
        return Plan([], next_fire_at)
    if coalesce:
        latest, count = next_fire_at, 1
        for moment in cron.times_after(next_fire_at):
            if moment > now:
                return Plan([Firing(latest, count)], moment)
            latest, count = moment, count + 1
            if count >= max_counted:
                break
        # Counting stopped: the run still answers the latest due time; `coalesced` is a floor.
        jumped = cron.last_at_or_before(now, not_before=latest)
        return Plan([Firing(jumped, count)], cron.next_after(jumped), complete=jumped == latest)
    firings = [Firing(next_fire_at, 1)]
    times = cron.times_after(next_fire_at)
    following = next(times)
    while following <= now and len(firings) < max_firings:
        firings.append(Firing(following, 1))
        following = next(times)
    return Plan(firings, following)
