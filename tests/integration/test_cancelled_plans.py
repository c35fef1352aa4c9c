"""A plan called off is no plan any more: "The Tokyo trip got cancelled" ends "Max is going to Tokyo
in June" (real PostgreSQL, real embedding model)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from memsvc.schemas import AddRequest, ContextRequest, Message, SearchRequest

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def _add(service, ctx, user: str, message_id: str, text: str, day: int) -> None:  # type: ignore[no-untyped-def]
    message = Message(
        role="user", name="Max", content=text, id=message_id, created_at=T0 + timedelta(days=day)
    )
    outcome = service.run_ingest_job(service.submit_ingest(ctx, AddRequest(user_id=user, messages=[message])))
    assert outcome.status == "succeeded", outcome.error


def _semantic(service, ctx, user: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    items = service.list(ctx, user, memory_type="semantic", limit=100, cursor=None).items
    return {m.content: m for m in items}


def test_a_plan_called_off_is_closed_and_comes_back_when_the_cancellation_goes(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"cp-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, "p", "I'm going to Tokyo next month.", 0)
    _add(service, ctx, user, "w", "We're getting married in August!", 1)
    _add(service, ctx, user, "l", "I love Tokyo.", 2)
    _add(service, ctx, user, "c", "The Tokyo trip got cancelled.", 5)
    facts = _semantic(service, ctx, user)
    tokyo = facts["Max is going to Tokyo in June 2024"]
    # Called off before its time: it ends before it began (it never held).
    assert tokyo.status == "superseded" and tokyo.valid_to == T0 + timedelta(days=5)
    assert tokyo.valid_from is not None and tokyo.valid_to < tokyo.valid_from
    assert facts["Max loves Tokyo"].status == "active"  # a taste is no plan
    assert facts["Max and others are getting married in August 2024"].status == "active"
    results = service.search(ctx, SearchRequest(query="Is Max going to Tokyo?", user_id=user, limit=10))
    assert not any(r.content == tokyo.content for r in results)
    block = service.context(ctx, ContextRequest(query="What are Max's plans?", user_id=user)).context
    assert "going to Tokyo in June" not in block and "Tokyo trip got cancelled" in block

    _add(service, ctx, user, "x", "We called off the wedding.", 6)
    wedding = _semantic(service, ctx, user)["Max and others are getting married in August 2024"]
    assert wedding.status == "superseded"

    cancellation = next(
        m for m in _semantic(service, ctx, user).values() if "Tokyo trip got cancelled" in m.content
    )
    turn = next(
        m
        for m in service.list(ctx, user, memory_type="episodic", limit=100, cursor=None).items
        if m.kind == "turn" and m.source_message_ids == ["c"]
    )
    service.delete(ctx, turn.id)
    assert cancellation.id not in {m.id for m in _semantic(service, ctx, user).values()}
    assert _semantic(service, ctx, user)["Max is going to Tokyo in June 2024"].status == "active"


def test_a_plan_moved_to_another_time_is_the_plan_at_that_time(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"mp-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, "a", "My dentist appointment is on the 9th.", 0)  # Thursday 9 May
    _add(service, ctx, user, "i", "My job interview is on the 20th.", 0)
    _add(service, ctx, user, "m", "I moved my dentist appointment to Friday.", 2)  # said on Friday 3 May
    _add(service, ctx, user, "p", "My interview got pushed to May 24th.", 3)
    facts = _semantic(service, ctx, user)
    for old, new in (
        ("Max's dentist appointment is on 9 May 2024", "Max moved Max's dentist appointment to 10 May 2024"),
        ("Max's job interview is on 20 May 2024", "Max's interview got pushed to 24 May 2024"),
    ):
        assert facts[old].status == "superseded" and facts[new].status == "active", old
    results = service.search(ctx, SearchRequest(query="When is Max's job interview?", user_id=user, limit=5))
    assert not any("20 May" in r.content for r in results)  # the time it was moved from never held


def test_a_plan_taken_back_in_the_negative_ends_and_a_friends_plan_is_not_ones_own(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"cp-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, "t", "I'm flying to Tokyo next month.", 0)
    _add(service, ctx, user, "j", "My friend Jon is getting married next month.", 1)
    _add(service, ctx, user, "p", "I'm hosting a party on Saturday.", 2)
    _add(service, ctx, user, "n", "I'm not flying to Tokyo after all.", 3)
    _add(service, ctx, user, "w", "My wedding got postponed to September.", 4)
    _add(service, ctx, user, "o", "The party is off.", 5)
    facts = _semantic(service, ctx, user)
    assert facts["Max is flying to Tokyo in June 2024"].status == "superseded"
    assert facts["Max's friend Jon is getting married in June 2024"].status == "active"
    party = next(m for m in facts.values() if m.content.startswith("Max is hosting a party"))
    assert party.status == "superseded"
    # The wedding moved is a plan at its new time, written with its year.
    wedding = facts["Max's wedding got postponed to September 2024"]
    assert wedding.kind == "plan" and wedding.status == "active"
    assert wedding.valid_from == datetime(2024, 9, 1, tzinfo=UTC)


def test_a_date_that_slipped_or_was_pushed_is_the_plan_at_its_new_date(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"sl-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, "l", "Our v2 launch is on May 15.", 0)  # said on Wednesday 1 May
    _add(service, ctx, user, "d", "My deadline for the billing migration is June 14.", 0)
    _add(service, ctx, user, "s", "Our v2 launch slipped to May 22.", 6)
    _add(service, ctx, user, "p", "Good news, the billing migration deadline got pushed to June 28.", 7)
    _add(service, ctx, user, "r", "The security review is on Friday.", 8)  # said on Thursday
    _add(service, ctx, user, "w", "The party was amazing yesterday.", 9)  # no plan, nor "Max's party"
    _add(service, ctx, user, "a", "My surgery is on August 14.", 0)
    _add(service, ctx, user, "b", "My surgery is now on September 3rd.", 10)
    facts = _semantic(service, ctx, user)
    for old, new in (
        ("Max's surgery is on 14 August 2024", "Max's surgery is now on 3 September 2024"),
        ("Max's v2 launch is on 15 May 2024", "Max's v2 launch slipped to 22 May 2024"),
        (
            "Max's deadline for the billing migration is on 14 June 2024",
            "Max's billing migration deadline got pushed to 28 June 2024",
        ),
    ):
        assert facts[old].status == "superseded" and facts[new].status == "active", old
        assert facts[new].kind == "plan" and facts[new].valid_from is not None
        assert facts[new].valid_from.date() > T0.date(), new  # the date to come, not last year's
    review = [m for content, m in facts.items() if content.startswith("Max's security review")]
    assert [(m.content, m.kind) for m in review] == [("Max's security review is on 10 May 2024", "plan")]
    assert not any("party" in content for content in facts)
