"""Lines of a context block: what an assistant's message says, without what tells a model nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from memsvc.schemas import MemoryOut
from memsvc.search import assemble_context


def _said(role: str, content: str, message_id: str) -> MemoryOut:
    return MemoryOut(
        id=uuid.uuid4(),
        type="episodic",
        kind="turn",
        content=content,
        role=role,
        event_at=datetime(2024, 3, 1, 9, tzinfo=UTC),
        source_message_ids=[message_id],
    )


def test_an_assistant_saying_it_is_an_ai_is_left_out_of_its_line() -> None:
    block = assemble_context(
        [
            _said(
                "assistant",
                "Great question! I am an AI language model, so I can't book anything, but I can suggest "
                "an itinerary: Tokyo, Kyoto and Osaka.",
                "m1",
            ),
            _said("assistant", "As an AI, I have no opinions. The JR Pass pays off for that route.", "m2"),
            _said("user", "I'm an AI researcher, so I know the models.", "m3"),
        ],
        max_tokens=500,
    ).context
    assert "assistant: I can suggest an itinerary: Tokyo, Kyoto and Osaka. (src: m1)" in block
    assert "assistant: The JR Pass pays off for that route. (src: m2)" in block
    assert "user: I'm an AI researcher, so I know the models. (src: m3)" in block  # the user's own words


def _fact(content: str, message_id: str) -> MemoryOut:
    return MemoryOut(
        id=uuid.uuid4(),
        type="semantic",
        kind="fact",
        content=content,
        event_at=datetime(2024, 3, 1, 9, tzinfo=UTC),
        source_message_ids=[message_id],
    )


def test_a_fact_a_line_from_its_message_already_says_is_written_once() -> None:
    block = assemble_context(
        [
            _fact("Ann's job: Ann works as a backend engineer at Stripe", "m1"),
            _fact("Ann's employer: Ann works at Stripe", "m1"),
            _fact("Ann works as a backend engineer at Stripe", "m1"),
            _fact("Ann works at Stripe", "m2"),  # said again in another message: its own line
            _fact("Ann's manager is Dana", "m1"),
            _fact("Ann's employer: Ann works at Microsoft", "m3"),
            _fact("Ann works at Microsoft now", "m3"),
        ],
        max_tokens=500,
    )
    assert [i.content for i in block.items] == [
        "Ann's job: Ann works as a backend engineer at Stripe",
        "Ann works at Stripe",
        "Ann's manager is Dana",
        "Ann's employer: Ann works at Microsoft",
    ]
