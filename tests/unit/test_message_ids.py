"""The ids the server gives messages sent without one: a re-send is recognised, a repetition is not lost."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from memsvc.ingest import prepare_turns
from memsvc.schemas import AddRequest, Message

TENANT = uuid.uuid4()
MONDAY = datetime(2024, 5, 6, 9, tzinfo=UTC)


def _ids(texts: list[str], received_at: datetime = MONDAY, session_id: str | None = None) -> list[str]:
    request = AddRequest(
        user_id="ann", session_id=session_id, messages=[Message(role="user", content=t) for t in texts]
    )
    return [p.turn.message_id for p in prepare_turns(TENANT, request, received_at)]


def test_the_same_words_twice_in_one_add_are_two_messages() -> None:
    first, second, other = _ids(["ok", "ok", "Shall I book it?"])
    assert first != second and len({first, second, other}) == 3


def test_an_add_sent_again_the_same_day_gives_the_same_ids() -> None:
    said = ["Yes.", "Shall I book it?", "Yes."]
    assert _ids(said) == _ids(said, MONDAY + timedelta(hours=3))
    # A window of the conversation sent again is recognised: its "Yes." has the first one's words.
    first_yes, booking, _ = _ids(said)
    assert _ids(said[1:]) == [booking, first_yes]


def test_the_same_words_another_day_are_another_message() -> None:
    # Without a session id a message's session is its day: what is said again on Tuesday is new.
    assert _ids(["I went for a run today."]) != _ids(["I went for a run today."], MONDAY + timedelta(days=1))
    # In a session the client names, the session is what tells.
    tuesday = MONDAY + timedelta(days=1)
    assert _ids(["Done."], session_id="s") == _ids(["Done."], tuesday, session_id="s")


def test_a_time_or_client_id_given_is_what_tells() -> None:
    at = [Message(role="user", content="ok", created_at=MONDAY + timedelta(minutes=m)) for m in (0, 1)]
    request = AddRequest(user_id="ann", messages=at)
    first, second = (p.turn.message_id for p in prepare_turns(TENANT, request, MONDAY))
    assert first != second
    named = AddRequest(user_id="ann", messages=[Message(role="user", content="ok", id="m1")])
    assert [p.turn.message_id for p in prepare_turns(TENANT, named, MONDAY)] == ["m1"]
