from datetime import UTC, date, datetime, timedelta, timezone

from memsvc.local_time import local_time, said_day, utc_offset_of

TOKYO = timezone(timedelta(hours=9))
NEWFOUNDLAND = timezone(-timedelta(hours=3, minutes=30))


def test_the_offset_is_kept_in_minutes_and_utc_is_none() -> None:
    assert utc_offset_of(datetime(2024, 5, 10, 8, tzinfo=TOKYO)) == 540
    assert utc_offset_of(datetime(2024, 5, 10, 8, tzinfo=NEWFOUNDLAND)) == -210
    assert utc_offset_of(datetime(2024, 5, 10, 8, tzinfo=UTC)) is None
    assert utc_offset_of(datetime(2024, 5, 10, 8)) is None


def test_a_stored_instant_reads_back_on_the_speakers_clock() -> None:
    stored = datetime(2024, 5, 9, 23, tzinfo=UTC)
    back = local_time(stored, 540)
    assert back == stored and back.hour == 8 and back.date() == date(2024, 5, 10)
    assert local_time(stored, None) is stored


def test_a_day_said_stays_that_day_and_a_moment_is_the_speakers_day() -> None:
    said = datetime(2024, 5, 9, tzinfo=UTC)  # "yesterday", said in Tokyo on 10 May
    assert said_day(said, TOKYO) == date(2024, 5, 9)
    assert said_day(said, NEWFOUNDLAND) == date(2024, 5, 9)
    moment = datetime(2024, 5, 9, 23, tzinfo=UTC)
    assert said_day(moment, TOKYO) == date(2024, 5, 10)
    assert said_day(moment, None) == date(2024, 5, 9)
