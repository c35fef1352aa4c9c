"""The speaker's own clock. A message's time comes with the UTC offset it was said at; PostgreSQL
keeps only the instant, so the offset is kept beside it (`Memory.utc_offset`) and times are shown
back on the speaker's calendar: "[2024-05-10]" for 08:00 on 10 May in Tokyo, not its UTC day."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo


def utc_offset_of(at: datetime) -> int | None:
    """Minutes east of UTC `at` was given with; None for UTC or a time without a zone."""
    offset = at.utcoffset()
    if offset is None:
        return None
    return round(offset.total_seconds() / 60) or None


def local_time(at: datetime, utc_offset: int | None) -> datetime:
    """`at` as the speaker's clock read it (unchanged without an offset)."""
    if not utc_offset:
        return at
    return at.astimezone(timezone(timedelta(minutes=utc_offset)))


def said_day(at: datetime, zone: tzinfo | None) -> date:
    """The calendar day a validity bound stands for. A day that was said ("on 9 May", "yesterday")
    is stored as its midnight in UTC (`extraction.dates`) and is that day wherever the speaker is;
    any other time is a moment, shown on the speaker's calendar (`zone`)."""
    in_utc = at.astimezone(UTC)
    if in_utc.time() == time(0) or zone is None:
        return in_utc.date()
    return at.astimezone(zone).date()
