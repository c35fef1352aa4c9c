"""Forgetting plans a long message and its passages as one (`plan_forgetting`, pure)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from memsvc.consolidation import RetentionConfig, RetentionRow, plan_forgetting

T0 = datetime(2024, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=1000)
CONFIG = RetentionConfig()


def _row(kind: str = "turn", day: float = 0, turn_id: uuid.UUID | None = None) -> RetentionRow:
    return RetentionRow(
        id=uuid.uuid4(),
        kind=kind,
        content="Add an index on the transactions table over user_id and created_at.",
        importance=0.5,
        access_count=0,
        last_used_at=T0 + timedelta(days=day),
        status="active",
        pinned=False,
        attribute=None,
        archived_at=None,
        expires_at=None,
        turn_id=turn_id,
    )


def _message(**turn: object) -> tuple[RetentionRow, list[RetentionRow]]:
    message = replace(_row(), **turn)  # type: ignore[arg-type]
    return message, [_row("passage", turn_id=message.id) for _ in range(3)]


def _plan(rows: list[RetentionRow]) -> tuple[dict[uuid.UUID, str], set[uuid.UUID]]:
    plan = plan_forgetting(rows, user_clock=NOW, now=NOW, config=CONFIG)
    return dict(plan.archive), set(plan.purge)


def test_passages_are_archived_with_their_message_for_its_reason() -> None:
    turn, parts = _message()
    archive, purge = _plan([turn, *parts])
    assert set(archive) == {turn.id, *(p.id for p in parts)} and not purge
    assert {archive[p.id] for p in parts} == {archive[turn.id]}


def test_a_use_of_a_passage_is_a_use_of_its_message() -> None:
    turn, parts = _message()
    parts[1] = replace(parts[1], access_count=2, last_used_at=NOW - timedelta(days=3))
    assert _plan([turn, *parts]) == ({}, set())


def test_a_passage_is_never_forgotten_alone() -> None:
    turn, parts = _message(pinned=True)
    assert _plan([turn, *parts]) == ({}, set())  # the message is pinned: its old passages stay
    turn, parts = _message(last_used_at=NOW)
    assert _plan([turn, *parts]) == ({}, set())


def test_passages_follow_an_archived_message_and_its_purge() -> None:
    archived_at = NOW - timedelta(days=CONFIG.purge_after_days + 1)
    turn, parts = _message(status="archived", archived_at=archived_at)
    # One passage left active (archived before passages followed): archived now, after its message.
    parts = [replace(p, status="archived", archived_at=archived_at) for p in parts[:2]] + parts[2:]
    archive, purge = _plan([turn, *parts])
    assert purge == {turn.id, *(p.id for p in parts)} and not archive
    recent = NOW - timedelta(days=1)
    turn = replace(turn, archived_at=recent)
    parts = [replace(p, archived_at=recent) if p.status == "archived" else p for p in parts]
    archive, purge = _plan([turn, *parts])
    assert archive == {parts[2].id: "its message is archived"} and not purge


def test_a_passage_whose_message_is_gone_is_archived_then_purged() -> None:
    orphan = _row("passage", day=1000)
    assert _plan([orphan]) == ({orphan.id: "its message is gone"}, set())
    old = NOW - timedelta(days=CONFIG.purge_after_days + 1)
    archived = replace(orphan, status="archived", archived_at=old)
    assert _plan([archived]) == ({}, {archived.id})
