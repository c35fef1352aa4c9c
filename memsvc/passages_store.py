"""The store side of `extraction.passages`: passages of messages stored before passages existed,
and passages that follow an edit of their message (`recut_passages`).

Ingest cuts a long message into passages as it stores it; messages stored by an older memsvc have
none, and search returns them whole. `backfill_passages` finds every long turn without passages and
stores them exactly as ingest would have (the same derived ids, provenance, role, time and
metadata; the turn's status, `valid_to` and successor, so a closed turn's passages are closed too).

Idempotent and resumable: one transaction per batch of turns, each batch under the lock of the
users it touches (ingest and erasure take the same), rows keyed by derived ids and inserted with
`ON CONFLICT DO NOTHING`, and a turn that has passages by the time its batch commits is skipped.
Stopped at any point, a second run does what the first left undone and nothing twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.orm import Session

from memsvc.consolidation_store import lock_user
from memsvc.database import Database
from memsvc.embedding import Embedder
from memsvc.extraction.passages import Passage, PassageConfig, plan_passages
from memsvc.ingest import PASSAGE_KEY, content_hash, passage_memory, turn_line
from memsvc.ingest import passage_id as ingest_passage_id
from memsvc.local_time import local_time
from memsvc.models import HistoryEvent, Memory, MemorySource
from memsvc.store import bulk_insert, passages_of, snapshot, touch_feed

# Turns of the scope that may need passages: long enough (a message of more than `max_words` words
# has at least 2 * max_words + 1 characters; `plan_passages` decides), not archived, without any.
_NEEDS = """
    FROM memories m
    WHERE m.kind = 'turn' AND m.status <> 'archived' AND length(m.content) > :min_chars
      AND (CAST(:t AS uuid) IS NULL OR m.tenant_id = CAST(:t AS uuid))
      AND (CAST(:u AS text) IS NULL OR m.user_id = CAST(:u AS text))
      AND NOT EXISTS (
        SELECT 1 FROM memory_sources s JOIN memories p ON p.id = s.memory_id
        WHERE s.turn_id = m.id AND p.kind = 'passage'
      )
"""
_COUNT = text("SELECT count(*) " + _NEEDS)
_BATCH = text(
    "SELECT m.id, m.tenant_id, m.user_id, m.content, m.speaker "
    + _NEEDS
    + " AND m.id > CAST(:after AS uuid) ORDER BY m.id LIMIT :n"
)
# The same turns read again under their users' locks: still there, still without passages, and
# their state now (a supersession or an edit may have come in between).
_LOCKED = text(
    "SELECT m.id, m.tenant_id, m.user_id, m.agent_id, m.session_id, m.content, m.role, m.speaker, "
    "m.message_id, m.position, m.event_at, m.utc_offset, m.metadata, m.status, m.superseded_by, m.valid_to "
    + _NEEDS
    + " AND m.id = ANY(CAST(:ids AS uuid[]))"
)


@dataclass(slots=True)
class BackfillReport:
    """What a backfill did: long messages looked at, those given passages, passages stored."""

    messages_seen: int = 0
    messages_cut: int = 0
    passages: int = 0


def backfill_passages(
    database: Database,
    embedder: Embedder,
    config: PassageConfig | None = None,
    *,
    tenant_id: uuid.UUID | None = None,
    user_id: str | None = None,
    batch_size: int = 64,
    actor: str = "backfill",
    on_total: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> BackfillReport:
    """Store the passages of every long message (of a tenant, or of one user) that has none.

    `on_total` gets the number of messages to look at, `on_batch` the number each committed batch
    looked at (for a progress bar)."""
    if user_id is not None and tenant_id is None:
        raise ValueError("a user id needs its tenant")
    config = config or PassageConfig()
    scope = {"t": tenant_id, "u": user_id, "min_chars": 2 * config.max_words}
    report = BackfillReport()
    with database.session() as session:
        total = int(session.execute(_COUNT, scope).scalar_one())
    if on_total is not None:
        on_total(total)
    after = uuid.UUID(int=0)
    while True:
        with database.session() as session:
            batch = session.execute(_BATCH, {**scope, "after": after, "n": batch_size}).all()
        if not batch:
            return report
        after = batch[-1].id
        # Cut and embed outside any lock (the slow part), then store under the users' locks.
        plans = {r.id: (r.content, plan_passages(r.content, config)) for r in batch}
        lines = list(dict.fromkeys(turn_line(r.speaker or "", p.text) for r in batch for p in plans[r.id][1]))
        vector_of = dict(zip(lines, embedder.embed(lines), strict=True)) if lines else {}
        with database.session() as session:
            for tenant, user in sorted({(r.tenant_id, r.user_id) for r in batch}):
                lock_user(session, tenant, user)
            turns = session.execute(_LOCKED, {**scope, "ids": [r.id for r in batch]}).all()
            memories, sources, history = _rows(turns, plans, vector_of, actor)
            made = {
                memory_id
                for (memory_id,) in bulk_insert(
                    session, Memory, memories, conflict="(id) DO NOTHING", returning="id"
                )
            }
            bulk_insert(session, MemorySource, [s for s in sources if s["memory_id"] in made])
            bulk_insert(session, HistoryEvent, [h for h in history if h["memory_id"] in made])
        report.messages_seen += len(batch)
        report.messages_cut += len(
            {m["metadata_"][PASSAGE_KEY]["turn_id"] for m in memories if m["id"] in made}
        )
        report.passages += len(made)
        if on_batch is not None:
            on_batch(len(batch))


def _rows(
    turns: Sequence[Any],
    plans: dict[uuid.UUID, tuple[str, list[Passage]]],
    vector_of: dict[str, Any],
    actor: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows ingest would have written for these turns' passages (see `Ingestor._passage_rows`)."""
    memories: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    for turn in turns:
        cut, passages = plans.get(turn.id, ("", []))
        if turn.content != cut:
            continue  # edited since it was cut: the next run cuts it again
        for passage in passages:
            memory, source, event = _passage_row(turn, turn.metadata, passage, vector_of, actor)
            memories.append(memory)
            sources.append(source)
            history.append(event)
    return memories, sources, history


def _passage_row(
    turn: Any,
    metadata: dict[str, Any] | None,
    passage: Passage,
    vector_of: dict[str, Any],
    actor: str,
    archived_at: datetime | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """One passage of `turn` as ingest writes it (memory, provenance, history), in the turn's state
    (status, `valid_to`, successor): a closed or archived message's new passages are so too."""
    scope = {"tenant_id": turn.tenant_id, "user_id": turn.user_id}
    memory = passage_memory(
        turn.tenant_id,
        turn.user_id,
        turn.message_id,
        turn.id,
        passage,
        agent_id=turn.agent_id,
        session_id=turn.session_id,
        role=turn.role,
        speaker=turn.speaker,
        position=turn.position,
        event_at=local_time(turn.event_at, turn.utc_offset),
        metadata=metadata,
    )
    memory_id = memory["id"]
    memory |= {
        "valid_to": turn.valid_to,
        "status": turn.status,
        "superseded_by": turn.superseded_by,
        "archived_at": archived_at,
        "embedding": vector_of[turn_line(turn.speaker or "", passage.text)],
    }
    source = {"memory_id": memory_id, "message_id": turn.message_id, "turn_id": turn.id, **scope}
    event = {
        **scope,
        "memory_id": memory_id,
        "op": "create",
        "actor": actor,
        "before": None,
        "after": {"kind": "passage", "content": passage.text},
    }
    return memory, source, event


def passage_id(turn: Any, passage: Passage) -> uuid.UUID:
    """A passage's id, derived as ingest derives it: from its message and its span of words."""
    return ingest_passage_id(turn.tenant_id, turn.user_id, turn.message_id, passage)


@dataclass(slots=True)
class Recut:
    """What an edit of a message did to its passages (ids): made, rewritten, deleted."""

    created: list[uuid.UUID] = field(default_factory=list)
    updated: list[uuid.UUID] = field(default_factory=list)
    deleted: list[uuid.UUID] = field(default_factory=list)


def recut_passages(
    session: Session, turn: Memory, embedder: Embedder, config: PassageConfig, actor: str
) -> Recut:
    """After a turn's content was edited: its passages become those of the new text, cut as ingest
    cuts it, in the edit's transaction, each change a history event by `actor`. A passage whose
    span and text are unchanged stays as it is; one whose span (so its derived id) remains with
    other words is rewritten (re-embedded, an `update` event); the others are made (`create`) or
    deleted (`delete`). New passages take the turn's state (closed or archived with it).

    Call with the turn row locked and the user's ingest lock held (a backfill of the same message
    waits, then finds it has passages)."""
    done = Recut()
    if turn.kind != "turn":
        return done
    old = {p.id: p for p in passages_of(session, turn.tenant_id, [turn.id], lock=True)}
    wanted = {passage_id(turn, p): p for p in plan_passages(turn.content, config)}
    scope = {"tenant_id": turn.tenant_id, "user_id": turn.user_id}
    rewrite = [
        i
        for i, p in wanted.items()
        if i in old
        and (
            old[i].content != p.text
            or ((old[i].metadata_ or {}).get(PASSAGE_KEY) or {}).get("index") != p.index
        )
    ]
    embed = [wanted[i] for i in wanted if i not in old or (i in rewrite and old[i].content != wanted[i].text)]
    lines = list(dict.fromkeys(turn_line(turn.speaker or "", p.text) for p in embed))
    vector_of = dict(zip(lines, embedder.embed(lines), strict=True)) if lines else {}
    history: list[dict[str, Any]] = []
    for memory_id in rewrite:
        row, passage = old[memory_id], wanted[memory_id]
        before = snapshot(row)
        if row.content != passage.text:
            row.content, row.content_hash = passage.text, content_hash(passage.text)
            row.embedding = vector_of[turn_line(turn.speaker or "", passage.text)]
        row.metadata_ = {
            **(row.metadata_ or {}),
            PASSAGE_KEY: {"turn_id": str(turn.id), "index": passage.index},
        }
        row.updated_at = func.now()
        history.append(
            {
                **scope,
                "memory_id": memory_id,
                "op": "update",
                "actor": actor,
                "before": before,
                "after": snapshot(row),
            }
        )
        done.updated.append(memory_id)
    for memory_id, row in old.items():
        if memory_id not in wanted:
            history.append(
                {
                    **scope,
                    "memory_id": memory_id,
                    "op": "delete",
                    "actor": actor,
                    "before": snapshot(row),
                    "after": None,
                }
            )
            session.delete(row)
            done.deleted.append(memory_id)
    session.flush()
    made = [
        _passage_row(turn, turn.metadata_, p, vector_of, actor, turn.archived_at)
        for i, p in wanted.items()
        if i not in old
    ]
    created = {
        memory_id
        for (memory_id,) in bulk_insert(
            session, Memory, [m for m, _, _ in made], conflict="(id) DO NOTHING", returning="id"
        )
    }
    bulk_insert(session, MemorySource, [s for _, s, _ in made if s["memory_id"] in created])
    history.extend(e for _, _, e in made if e["memory_id"] in created)
    done.created = [m["id"] for m, _, _ in made if m["id"] in created]
    bulk_insert(session, HistoryEvent, history)
    # Metadata (the passage's index) is not a column the feed's trigger watches; corpora read it.
    touch_feed(session, turn.tenant_id, done.updated)
    return done
