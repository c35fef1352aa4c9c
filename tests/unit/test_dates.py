"""Relative-date resolution: phrases, base times and what they must resolve to."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from memsvc.extraction import RulesExtractor, Turn
from memsvc.extraction.dates import (
    has_trigger,
    main_date,
    resolve_dates,
    rewrite_relative,
    tense_of,
    valid_from,
)

MON_8_MAY = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)  # LoCoMo conv-26 session 1: a Monday
THU_25_MAY = datetime(2023, 5, 25, 13, 14, tzinfo=UTC)
SAT_15_JUL = datetime(2023, 7, 15, 13, 51, tzinfo=UTC)
SUN_14_MAY = datetime(2023, 5, 14, 10, 0, tzinfo=UTC)

# (text, base, expected span, expected date, granularity)
CASES = [
    # LoCoMo turns, with the session times they were said at (conv-26 unless noted).
    ("I went to a LGBTQ support group yesterday and it was so powerful.", MON_8_MAY, "yesterday",
     date(2023, 5, 7), "day"),
    ("I ran a charity race for mental health last Saturday", THU_25_MAY, "last Saturday",
     date(2023, 5, 20), "day"),
    ("We're thinking about going camping next month.", THU_25_MAY, "next month", date(2023, 6, 1), "month"),
    ("Yeah, I painted that lake sunrise last year!", MON_8_MAY, "last year", date(2022, 1, 1), "year"),
    ("I wanted to tell you about my school event last week.", datetime(2023, 6, 9, 19, 55, tzinfo=UTC),
     "last week", date(2023, 5, 29), "week"),
    ("Last Fri I finally took my kids to a pottery workshop.", SAT_15_JUL, "Last Fri",
     date(2023, 7, 14), "day"),
    ("I had a quiet weekend after we went camping with my fam two weekends ago.",
     datetime(2023, 7, 17, 14, 31, tzinfo=UTC), "two weekends ago", date(2023, 7, 8), "week"),
    ("I just joined a new LGBTQ activist group last Tues.", datetime(2023, 7, 20, 20, 56, tzinfo=UTC),
     "last Tues", date(2023, 7, 18), "day"),
    ("Last night was amazing!", datetime(2023, 8, 14, 14, 24, tzinfo=UTC), "Last night",
     date(2023, 8, 13), "day"),
    ("I had a wicked day out with the gang last weekend", datetime(2023, 9, 13, 0, 9, tzinfo=UTC),
     "last weekend", date(2023, 9, 9), "week"),
    ("A friend made it for my 18th birthday ten years ago.", datetime(2023, 6, 27, 10, 37, tzinfo=UTC),
     "ten years ago", date(2013, 1, 1), "year"),
    ("I'm going to a transgender conference this month.", datetime(2023, 7, 3, 13, 36, tzinfo=UTC),
     "this month", date(2023, 7, 1), "month"),
    ("Lost my job as a banker yesterday", datetime(2023, 1, 20, 16, 4, tzinfo=UTC), "yesterday",  # conv-30
     date(2023, 1, 19), "day"),
    # Phrases dateparser alone gets wrong or cannot read.
    ("this past Friday I sang", MON_8_MAY, "this past Friday", date(2023, 5, 5), "day"),
    ("I did it the week before.", MON_8_MAY, "the week before", date(2023, 5, 1), "week"),
    ("the week before last I swam", MON_8_MAY, "the week before last", date(2023, 4, 24), "week"),
    ("we went hiking last weekend", SUN_14_MAY, "last weekend", date(2023, 5, 6), "week"),
    ("we are camping this weekend", SUN_14_MAY, "this weekend", date(2023, 5, 13), "week"),
    ("I joined this Monday", datetime(2023, 5, 10, tzinfo=UTC), "this Monday", date(2023, 5, 8), "day"),
    ("I'll see them this Monday", datetime(2023, 5, 10, tzinfo=UTC), "this Monday", date(2023, 5, 15), "day"),
    ("last May we met", MON_8_MAY, "last May", date(2022, 5, 1), "month"),
    ("I'll go next Saturday", SAT_15_JUL, "next Saturday", date(2023, 7, 22), "day"),
    ("I went on Friday", MON_8_MAY, "on Friday", date(2023, 5, 5), "day"),
    ("I will go on Friday", MON_8_MAY, "on Friday", date(2023, 5, 12), "day"),
    ("Got the tattoo a few years ago", datetime(2023, 2, 8, tzinfo=UTC), "a few years ago",
     date(2020, 1, 1), "year"),
    ("it happened a couple of weeks ago", MON_8_MAY, "a couple of weeks ago", date(2023, 4, 24), "week"),
    ("we leave in two weeks", MON_8_MAY, "in two weeks", date(2023, 5, 22), "week"),
    ("I started transitioning three years ago", MON_8_MAY, "three years ago", date(2020, 1, 1), "year"),
    ("the day before yesterday", MON_8_MAY, "the day before yesterday", date(2023, 5, 6), "day"),
    # Absolute dates.
    ("I've painted since 2016", MON_8_MAY, "since 2016", date(2016, 1, 1), "year"),
    ("I was there on 5 May", MON_8_MAY, "on 5 May", date(2023, 5, 5), "day"),
    ("her birthday is August 13", MON_8_MAY, "August 13", date(2022, 8, 13), "day"),
    ("we moved in May 2022", MON_8_MAY, "in May 2022", date(2022, 5, 1), "month"),
    ("we met on 13 March 2021", MON_8_MAY, "on 13 March 2021", date(2021, 3, 13), "day"),
    # A day of the month: the nearest on the side of the tense; a season: its first month.
    ("I'm going to Paris on the 20th", MON_8_MAY, "on the 20th", date(2023, 5, 20), "day"),
    ("My appointment is on the 5th", MON_8_MAY, "on the 5th", date(2023, 6, 5), "day"),
    ("I got my results on the 2nd", MON_8_MAY, "on the 2nd", date(2023, 5, 2), "day"),
    ("I went there on the 31st", MON_8_MAY, "on the 31st", date(2023, 3, 31), "day"),
    ("Last summer I went to Greece", MON_8_MAY, "Last summer", date(2022, 6, 1), "month"),
    ("Last summer I went to Greece", datetime(2023, 10, 2, tzinfo=UTC), "Last summer", date(2023, 6, 1),
     "month"),
    ("This summer I'm going to Crete", MON_8_MAY, "This summer", date(2023, 6, 1), "month"),
    ("Next winter we will ski", MON_8_MAY, "Next winter", date(2023, 12, 1), "month"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "base", "span", "expected", "granularity"), CASES)
def test_resolves(text: str, base: datetime, span: str, expected: date, granularity: str) -> None:
    found = resolve_dates(text, base)
    assert [d.span for d in found] == [span]
    (d,) = found
    assert d.value == datetime(expected.year, expected.month, expected.day, tzinfo=base.tzinfo)
    assert d.granularity == granularity
    assert text[d.start : d.end] == span


@pytest.mark.parametrize(
    "text",
    [
        "I may go to the park",  # "may" the verb
        "Cyberpunk 2077 is great",  # a number, not a year
        "It was a while ago",
        "We should march for it",
        "I love Fridays",  # a habit, not a date
        "I write from 7-9 PM, Monday to Friday",  # days of every week, not the dates of one
        "The studio is open Mon-Fri",
        "I run Monday through Wednesday",
        "See you soon!",
        "the week before my birthday",  # anchored to something we cannot date
        "It happened in the 20th century",
        "On the 20th anniversary of the band",
        "I love the summer",
    ],
)
def test_no_date(text: str) -> None:
    assert resolve_dates(text, MON_8_MAY) == []


def test_two_weekdays_that_are_not_a_range_are_two_dates() -> None:
    found = resolve_dates("I met her on Thursday and Friday", MON_8_MAY)
    assert [d.value.date() for d in found] == [date(2023, 5, 4), date(2023, 5, 5)]


def test_a_day_is_the_speaker_s_calendar_day_stored_at_midnight_utc() -> None:
    # 23:30 in New York is already the next day in UTC; "yesterday" is about the speaker's day.
    ny = timezone(timedelta(hours=-4))
    (d,) = resolve_dates("I went yesterday", datetime(2023, 5, 8, 23, 30, tzinfo=ny))
    assert d.value == datetime(2023, 5, 7, tzinfo=UTC) and d.label == "7 May 2023"
    # 08:00 in Tokyo is still the day before in UTC: the day stored is the one the text names
    # (at the speaker's midnight it was 8 May in UTC, and the context block said "[2024-05-08]").
    tokyo = timezone(timedelta(hours=9))
    (d,) = resolve_dates("I went hiking yesterday", datetime(2024, 5, 10, 8, tzinfo=tokyo))
    assert d.value == datetime(2024, 5, 9, tzinfo=UTC) and d.label == "9 May 2024"


def test_a_month_without_its_year_is_written_with_the_year_it_means() -> None:
    # Read a year later, "in June" could be any June: the fact says which.
    for said, written in [
        ("I'm going to Tokyo in June", "I'm going to Tokyo in June 2023"),
        ("I started a new job in January", "I started a new job in January 2023"),
        ("I was born in May 1990", "I was born in May 1990"),
    ]:
        assert rewrite_relative(said, resolve_dates(said, THU_25_MAY)) == written
    assert resolve_dates("I go camping every June", THU_25_MAY) == []


def test_labels_and_rewrite() -> None:
    text = "I ran a race last Saturday and we go camping next month, since 2016 too"
    dates = resolve_dates(text, THU_25_MAY)
    assert [d.label for d in dates] == ["20 May 2023", "June 2023", "2016"]
    assert [d.relative for d in dates] == [True, True, False]
    assert (
        rewrite_relative(text, dates)
        == "I ran a race on 20 May 2023 and we go camping in June 2023, since 2016 too"
    )
    weekend = resolve_dates("camping two weekends ago", datetime(2023, 7, 17, tzinfo=UTC))
    assert rewrite_relative("camping two weekends ago", weekend) == "camping on the weekend of 8 July 2023"
    vague = resolve_dates("a few years ago", MON_8_MAY)
    assert vague[0].approximate and vague[0].phrase == "around 2020"


def test_main_date_prefers_the_relative_phrase() -> None:
    dates = resolve_dates("Painting since 2016, and yesterday I finished one", MON_8_MAY)
    main = main_date(dates)
    assert main is not None and main.span == "yesterday"
    assert main_date([]) is None
    assert valid_from("Painting since 2016, and yesterday I finished one", MON_8_MAY) == datetime(
        2023, 5, 7, tzinfo=UTC
    )
    assert valid_from("I love painting", MON_8_MAY) is None


def test_tense_and_trigger() -> None:
    assert tense_of("I'm going hiking on Saturday") == "future"
    assert tense_of("I'll call") == "future"
    assert tense_of("I went hiking on Saturday") == "past"
    # An action in the present progressive is planned; a state is not (LoCoMo conv-42 said the
    # first on Friday 3 June 2022, of the weekend to come; it was read as the weekend before).
    assert tense_of("Yep, I'm hiking with some buddies this weekend.") == "future"
    assert tense_of("We're hosting at Thanksgiving.") == "future"
    assert tense_of("I'm still enjoying the book I got at Christmas.") == "past"
    assert has_trigger("see you on Friday") and has_trigger("back in 2019")
    assert not has_trigger("I love painting and pottery")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("In two years I will retire.", datetime(9998, 6, 1, tzinfo=UTC)),
        ("Two years ago I lived in Oslo.", datetime(2, 6, 1, tzinfo=UTC)),
        ("A year ago I lived in Oslo.", datetime(2, 6, 1, tzinfo=UTC)),
    ],
)
def test_a_date_past_the_years_a_request_may_carry_is_left_out(text: str, said: datetime) -> None:
    assert resolve_dates(text, said) == []


@pytest.mark.parametrize(
    ("text", "said", "day"),
    [
        ("My brother's wedding is this Saturday.", datetime(2023, 5, 16, tzinfo=UTC), date(2023, 5, 20)),
        ("My chemistry exam is on Friday.", datetime(2023, 5, 10, tzinfo=UTC), date(2023, 5, 12)),
        ("My exam's Friday.", datetime(2023, 5, 10, tzinfo=UTC), date(2023, 5, 12)),
        ("The party was on Friday.", datetime(2023, 5, 10, tzinfo=UTC), date(2023, 5, 5)),
        ("I went hiking on Saturday.", datetime(2023, 5, 16, tzinfo=UTC), date(2023, 5, 13)),
        # A date written without its year, and the day of the month a thing is due (QA, session 21:
        # each was the one before it was said).
        ("My interview is on July 2nd.", datetime(2024, 5, 15, tzinfo=UTC), date(2024, 7, 2)),
        ("My interview is on 2 July.", datetime(2024, 5, 15, tzinfo=UTC), date(2024, 7, 2)),
        ("My rent is due on the 1st.", datetime(2024, 5, 15, tzinfo=UTC), date(2024, 6, 1)),
        ("My interview was on May 2nd.", datetime(2024, 5, 15, tzinfo=UTC), date(2024, 5, 2)),
        (
            "The dentist moved my appointment to Thursday.",
            datetime(2024, 3, 16, tzinfo=UTC),
            date(2024, 3, 21),
        ),
    ],
)
def test_a_day_a_thing_is_on_is_one_to_come(text: str, said: datetime, day: date) -> None:
    # Present-tense schedules were read as past: "is this Saturday" became the Saturday before.
    assert [d.value.date() for d in resolve_dates(text, said)] == [day]


def test_a_date_after_a_preposition_takes_no_second_one() -> None:
    said = datetime(2024, 3, 16, tzinfo=UTC)
    text = "The dentist moved my appointment to Thursday."
    assert (
        rewrite_relative(text, resolve_dates(text, said))
        == "The dentist moved my appointment to 21 March 2024."
    )
    text = "I stayed until Friday."
    assert rewrite_relative(text, resolve_dates(text, said)) == "I stayed until 15 March 2024."


def test_a_range_of_days_is_dated_by_its_start_and_both_ends_say_their_year() -> None:
    said = datetime(2024, 6, 3, tzinfo=UTC)
    text = "We are going to Japan from October 10 to October 24."
    dates = resolve_dates(text, said)
    assert [d.value.date() for d in dates] == [date(2024, 10, 10), date(2024, 10, 24)]  # "from October", "24"
    assert rewrite_relative(text, dates) == "We are going to Japan from 10 October 2024 to 24 October 2024."


def test_a_year_ago_today_is_one_day() -> None:
    said = datetime(2024, 3, 1, 9, tzinfo=UTC)
    text = "A year ago today I ran my first marathon, and yesterday I ran again."
    found = resolve_dates(text, said)
    assert [(d.span, d.value.date()) for d in found] == [
        ("A year ago today", date(2023, 3, 1)),
        ("yesterday", date(2024, 2, 29)),
    ]
    assert rewrite_relative(text, found).startswith("on 1 March 2023 I ran my first marathon")


# (text, base, the span's new words, the day) of holidays: the holiday stays in the text, with its year.
HOLIDAYS = [
    ("We got engaged last Christmas.", MON_8_MAY,
     "We got engaged Christmas 2022.", date(2022, 12, 25)),
    ("I visited my parents at Christmas.", MON_8_MAY,
     "I visited my parents at Christmas 2022.", date(2022, 12, 25)),
    ("I'll visit my parents at Christmas.", MON_8_MAY,
     "I'll visit my parents at Christmas 2023.", date(2023, 12, 25)),
    ("We're hosting this Thanksgiving.", MON_8_MAY,
     "We're hosting Thanksgiving 2023.", date(2023, 11, 23)),
    ("I finished the quilt before Easter.", MON_8_MAY,
     "I finished the quilt before Easter 2023.", date(2023, 4, 9)),
    ("We met on New Year's Eve.", MON_8_MAY,
     "We met on New Year's Eve 2022.", date(2022, 12, 31)),
    ("We threw a party on NYE.", MON_8_MAY,
     "We threw a party on New Year's Eve 2022.", date(2022, 12, 31)),
    ("On the Fourth of July we watched fireworks.", SAT_15_JUL,
     "On the Fourth of July 2023 we watched fireworks.", date(2023, 7, 4)),
    ("See you next Halloween!", datetime(2023, 10, 31, 20, 0, tzinfo=UTC),
     "See you Halloween 2024!", date(2024, 10, 31)),
    ("It was the best gift I got last Christmas.", datetime(2023, 12, 28, 9, 0, tzinfo=UTC),
     "It was the best gift I got Christmas 2023.", date(2023, 12, 25)),
]  # fmt: skip


@pytest.mark.parametrize(("text", "base", "rewritten", "day"), HOLIDAYS)
def test_holidays_resolve_to_their_day_of_the_year_meant(
    text: str, base: datetime, rewritten: str, day: date
) -> None:
    (found,) = resolve_dates(text, base)
    assert found.value.date() == day and found.granularity == "day" and found.relative
    assert rewrite_relative(text, [found]) == rewritten


@pytest.mark.parametrize(
    "text",
    [
        "I love Christmas movies.",
        "Thanksgiving's always special for us.",
        "My New Year's resolution is to run more.",
        "We went skiing over Christmas break.",
        "The kids hunted for Easter eggs.",
        "A new year of school starts soon.",
        "I volunteer at the shelter every Monday.",
        "I swim every other Tuesday.",
        "Each June we go to the lake.",
    ],
)
def test_a_thing_named_after_a_holiday_or_every_weekday_is_no_date(text: str) -> None:
    assert resolve_dates(text, MON_8_MAY) == []


# Found through REST by a QA pass (session 18): a holiday that is a name, a year said with it, and a
# birthday on a holiday.
WED_6_MAR_2024 = datetime(2024, 3, 6, 12, tzinfo=UTC)
FRI_1_OCT_2023 = datetime(2023, 10, 1, 12, tzinfo=UTC)


def _facts(text: str, at: datetime) -> list[tuple[str, datetime | None]]:
    result = RulesExtractor().extract([Turn("m1", "user", "Ann", text, at)])
    return [(f.content, f.valid_from) for f in result.facts]


def test_christmas_island_is_a_place_not_a_date() -> None:
    # REST: "My sister lives on Christmas Island." -> "Ann's sister lives on Christmas 2022 Island",
    # valid_from 2022-12-25.
    text = "My sister lives on Christmas Island."
    assert resolve_dates(text, FRI_1_OCT_2023) == []
    assert all("Christmas Island" in content for content, _ in _facts(text, FRI_1_OCT_2023))


def test_a_holiday_with_its_year_written_keeps_that_year() -> None:
    # REST: "We got engaged on Christmas 2019." -> "... on Christmas 2022 2019", valid_from 2022-12-25.
    text = "We got engaged on Christmas 2019."
    found = resolve_dates(text, WED_6_MAR_2024)
    assert [d.value.date() for d in found] == [date(2019, 12, 25)]
    assert "2023 2019" not in rewrite_relative(text, found)
    assert "2024 2019" not in rewrite_relative(text, found)


def test_new_years_day_with_its_year_keeps_that_year() -> None:
    # REST: "I quit smoking on New Year's Day 2020." -> "... on New Year's Day 2023 2020", vf 2023-01-01.
    text = "I quit smoking on New Year's Day 2020."
    found = resolve_dates(text, datetime(2023, 3, 10, 12, tzinfo=UTC))
    assert [d.value.date() for d in found] == [date(2020, 1, 1)]
    assert len(re.findall(r"\b(?:19|20)\d{2}\b", rewrite_relative(text, found))) == 1  # one year, not two


def test_thanksgiving_day_leaves_no_stray_day() -> None:
    # REST: "I visited my parents on thanksgiving day." -> "... on Thanksgiving 2023 day".
    text = "I visited my parents on thanksgiving day."
    found = resolve_dates(text, datetime(2023, 12, 5, 12, tzinfo=UTC))
    assert [d.value.date() for d in found] == [date(2023, 11, 23)]
    assert rewrite_relative(text, found) == "I visited my parents on Thanksgiving 2023."


def test_born_on_christmas_day_is_no_christmas_of_last_year() -> None:
    # REST: "I was born on Christmas Day." said 1 Oct 2023 -> "Ann was born on Christmas 2022",
    # valid_from 2022-12-25: a birthday names the day of the year, not last year's Christmas.
    facts = _facts("I was born on Christmas Day.", FRI_1_OCT_2023)
    assert facts, "no fact at all"
    for content, said_from in facts:
        assert "2022" not in content and "2023" not in content, content
        assert said_from is None or said_from.date() != date(2022, 12, 25), said_from


@pytest.mark.parametrize(
    ("text", "month"),
    [
        ("My exam is in April.", date(2024, 4, 1)),  # was April 2023
        ("My daughter starts kindergarten in September.", date(2024, 9, 1)),
        ("My lease ends in February.", date(2025, 2, 1)),
        ("The course begins in May.", date(2024, 5, 1)),
        # Said in the past tense, the month is one gone by.
        ("I moved to Boston in February.", date(2024, 2, 1)),
        ("I finished the course in April.", date(2023, 4, 1)),
    ],
)
def test_a_month_a_thing_is_in_or_starts_in_is_one_to_come(text: str, month: date) -> None:
    (found,) = resolve_dates(text, datetime(2024, 3, 1, 10, tzinfo=UTC))
    assert found.value.date() == month


@pytest.mark.parametrize(
    ("text", "month"),
    [
        ("My wedding got postponed to September.", date(2024, 9, 1)),
        ("The launch was pushed back to November.", date(2024, 11, 1)),
        ("My interview was rescheduled to April.", date(2024, 4, 1)),
        ("She moved to May's flat.", None),  # a name's, not a month's
        ("I went back to May's house.", None),
        ("I'm going to March with them.", None),  # "to" alone is no date's
    ],
)
def test_a_month_a_thing_was_moved_to_is_its_new_date(text: str, month: date | None) -> None:
    found = resolve_dates(text, datetime(2024, 3, 1, 10, tzinfo=UTC))
    assert [d.value.date() for d in found] == ([month] if month else [])


def test_the_month_one_is_in_said_of_the_future_is_this_one() -> None:
    said = datetime(2024, 1, 20, 10, tzinfo=UTC)
    for text, month in (
        ("My exam is in January.", date(2024, 1, 1)),
        ("My lease ends in January 2025.", date(2025, 1, 1)),
        ("I'll go next January.", date(2025, 1, 1)),
    ):
        assert [d.value.date() for d in resolve_dates(text, said)] == [month], text
    plan = RulesExtractor().extract([Turn("m1", "user", "Ann", "I'm going to Rome in January.", said)])
    assert [(f.content, f.kind) for f in plan.facts] == [("Ann is going to Rome in January 2024", "plan")]


@pytest.mark.parametrize(
    ("text", "day", "written"),
    [
        ("I need the docs done by the end of the month.", date(2024, 3, 31), "by the end of March 2024."),
        ("Ship it by end of next month.", date(2024, 4, 30), "by the end of April 2024."),
        ("We close at the end of the week.", date(2024, 3, 10), "the end of the week of 4 March 2024."),
        ("I'll be done by the end of the year.", date(2024, 12, 31), "by the end of 2024."),
    ],
)
def test_the_end_of_a_month_week_or_year_is_its_last_day(text: str, day: date, written: str) -> None:
    said = datetime(2024, 3, 6, 10, tzinfo=UTC)  # a Wednesday
    found = resolve_dates(text, said)
    assert [d.value.date() for d in found] == [day]
    assert rewrite_relative(text, found).endswith(written)
    assert resolve_dates("At the end of the day, it works.", said) == []


@pytest.mark.parametrize(
    ("text", "day"),
    [
        # Said on Wednesday 18 December 2024: a day a thing starts, ends or is now on is one to come.
        ("I start my new job on March 1st.", date(2025, 3, 1)),
        ("My new job starts on March 1st.", date(2025, 3, 1)),
        ("my lease ends on April 30", date(2025, 4, 30)),
        ("My flight is now on May 2nd.", date(2025, 5, 2)),
        ("my son Leo starts school on sept 4th", date(2025, 9, 4)),
        ("My lease ended on April 30.", date(2024, 4, 30)),  # said in the past tense: gone by
        ("I'm seeing the dentist on December 18th.", date(2024, 12, 18)),  # today, not next year's
        # A month in lower case after a preposition or before a day is the month; "I may go" is no May.
        ("we're going to italy in march", date(2025, 3, 1)),
        ("booked flights to lisbon for may 12-19", date(2025, 5, 12)),
        ("I may go to the gym", None),
    ],
)
def test_a_day_to_come_said_in_the_present_is_next_years_and_today_is_today(
    text: str, day: date | None
) -> None:
    found = resolve_dates(text, datetime(2024, 12, 18, 9, tzinfo=UTC))
    assert [d.value.date() for d in found] == ([day] if day else [])
