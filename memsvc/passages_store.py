"""Passages for messages stored before passages existed (the store side of `extraction.passages`).

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
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from memsvc.consolidation_store import lock_user
from memsvc.database import Database
from memsvc.embedding import Embedder
from memsvc.extraction.passages import Passage, PassageConfig, plan_passages
from memsvc.ingest import PASSAGE_KEY, content_hash, derived_id, turn_line
from memsvc.models import HistoryEvent, Memory, MemorySource
from memsvc.store import bulk_insert

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
    "m.message_id, m.position, m.event_at, m.metadata, m.status, m.superseded_by, m.valid_to "
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
        scope = {"tenant_id": turn.tenant_id, "user_id": turn.user_id}
        cut, passages = plans.get(turn.id, ("", []))
        if turn.content != cut:
            continue  # edited since it was cut: the next run cuts it again
        for passage in passages:
            memory_id = derived_id(
                turn.tenant_id, turn.user_id, "passage", turn.message_id, passage.start_word, passage.end_word
            )
            memories.append(
                {
                    "id": memory_id,
                    **scope,
                    "agent_id": turn.agent_id,
                    "session_id": turn.session_id,
                    "type": "episodic",
                    "kind": "passage",
                    "content": passage.text,
                    "content_hash": content_hash(passage.text),
                    "role": turn.role,
                    "speaker": turn.speaker,
                    "position": turn.position,
                    "event_at": turn.event_at,
                    "valid_from": turn.event_at,
                    "valid_to": turn.valid_to,
                    "status": turn.status,
                    "superseded_by": turn.superseded_by,
                    "metadata_": {
                        **(turn.metadata or {}),
                        PASSAGE_KEY: {"turn_id": str(turn.id), "index": passage.index},
                    },
                    "embedding": vector_of[turn_line(turn.speaker or "", passage.text)],
                }
            )
            sources.append(
                {"memory_id": memory_id, "message_id": turn.message_id, "turn_id": turn.id, **scope}
            )
            history.append(
                {
                    **scope,
                    "memory_id": memory_id,
                    "op": "create",
                    "actor": actor,
                    "before": None,
                    "after": {"kind": "passage", "content": passage.text},
                }
            )
    return memories, sources, history
