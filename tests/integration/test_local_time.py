"""Times on the speaker's calendar: a message's UTC offset is kept beside its instant, and the API,
the context block and a day's session read it (real PostgreSQL, real embedding model)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from memsvc.schemas import AddRequest, ContextRequest, Message, SearchRequest

TOKYO = timezone(timedelta(hours=9))
CALIFORNIA = timezone(timedelta(hours=-7))


def _add(service, ctx, user: str, messages: list[Message]) -> None:  # type: ignore[no-untyped-def]
    outcome = service.run_ingest_job(service.submit_ingest(ctx, AddRequest(user_id=user, messages=messages)))
    assert outcome.status == "succeeded", outcome.error


def _line(block: str, words: str) -> str:
    return next(line for line in block.splitlines() if words in line)


def test_east_of_utc_every_line_is_the_speakers_day(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"lt-{uuid.uuid4().hex[:6]}"
    morning = datetime(2024, 5, 10, 8, 0, tzinfo=TOKYO)  # 9 May, 23:00 in UTC
    _add(
        service,
        ctx,
        user,
        [
            Message(
                role="user", name="Ann", id="a", content="I adopted a cat named Miso.", created_at=morning
            ),
            Message(
                role="user",
                name="Ann",
                id="b",
                content="Yesterday I went hiking near Mt. Fuji.",
                created_at=morning + timedelta(minutes=1),
            ),
        ],
    )
    results = service.search(ctx, SearchRequest(query="Ann's cat Miso", user_id=user, limit=20))
    turn = next(r for r in results if r.kind == "turn" and r.source_message_ids == ["a"])
    assert turn.event_at == morning and turn.event_at.utcoffset() == timedelta(hours=9)
    assert turn.session_id == "auto-2024-05-10"
    listed = service.list(ctx, user, memory_type=None, limit=100, cursor=None).items
    assert {m.event_at.utcoffset() for m in listed} == {timedelta(hours=9)}

    block = service.context(
        ctx, ContextRequest(query="What has Ann been up to?", user_id=user, max_tokens=800)
    )
    assert _line(block.context, "Ann: I adopted a cat").startswith("- [2024-05-10] ")
    cat = _line(block.context, "cat named Miso (src: a)")
    assert cat.startswith("- [2024-05-10] ") and not cat.startswith("- [2024-05-10] Ann:")
    # A day said is that day wherever the speaker is: "yesterday" in Tokyo is 9 May.
    assert _line(block.context, "hiking near Mt. Fuji (src: b)").startswith("- [2024-05-09] ")


def test_west_of_utc_one_evening_is_one_session(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"lt-{uuid.uuid4().hex[:6]}"
    evening = datetime(2024, 5, 9, 16, 30, tzinfo=CALIFORNIA)  # 23:30 in UTC; the next two are 10 May in UTC
    texts = ["I'm cooking risotto tonight.", "My sister Kate is coming over.", "She loves mushrooms."]
    _add(
        service,
        ctx,
        user,
        [
            Message(role="user", name="Bo", id=f"w{i}", content=text, created_at=evening + timedelta(hours=i))
            for i, text in enumerate(texts)
        ],
    )
    turns = [
        m for m in service.list(ctx, user, memory_type=None, limit=100, cursor=None).items if m.kind == "turn"
    ]
    assert len(turns) == 3 and {t.session_id for t in turns} == {"auto-2024-05-09"}
    block = service.context(ctx, ContextRequest(query="Who is coming over?", user_id=user, max_tokens=800))
    for text in texts:
        assert _line(block.context, f"Bo: {text}").startswith("- [2024-05-09] ")


def test_since_and_until_find_a_fact_by_when_it_happened(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"lt-{uuid.uuid4().hex[:6]}"
    said_at = datetime(2024, 5, 10, 18, 0, tzinfo=CALIFORNIA)
    message = Message(
        role="user", name="Lia", id="g", content="Yesterday I went to the Getty museum.", created_at=said_at
    )
    _add(service, ctx, user, [message])

    def listed(since: datetime, until: datetime) -> list[str]:
        page = service.list(ctx, user, memory_type=None, limit=100, cursor=None, since=since, until=until)
        return [m.content for m in page.items]

    day = datetime(2024, 5, 9, tzinfo=UTC)
    assert listed(day, day + timedelta(days=1)) == ["On 9 May 2024 Lia went to the Getty museum"]
    said = listed(day + timedelta(days=1), day + timedelta(days=3))
    assert "Yesterday I went to the Getty museum." in said and not any("Lia went" in c for c in said)
    # A window given in the speaker's own offset reads the day said as that calendar day.
    local_day = datetime(2024, 5, 9, tzinfo=CALIFORNIA)
    assert "On 9 May 2024 Lia went to the Getty museum" in listed(local_day, local_day + timedelta(days=1))
    assert "On 9 May 2024 Lia went to the Getty museum" not in listed(
        local_day - timedelta(days=1), local_day
    )
    assert "On 9 May 2024 Lia went to the Getty museum" in listed(
        local_day + timedelta(hours=20), local_day + timedelta(days=1)
    )
