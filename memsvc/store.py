"""Reading and changing stored memories. Every query is filtered by tenant here, not in handlers."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, NamedTuple, cast

import numpy as np
import psycopg
from pgvector.sqlalchemy import HALFVEC
from psycopg.abc import Buffer
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb
from sqlalchemy import (
    Column,
    ColumnDefault,
    CursorResult,
    and_,
    case,
    delete,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Session, aliased, defer

from memsvc.errors import InvalidInput, NotFound
from memsvc.extraction.base import CORRECTS_KEY
from memsvc.local_time import local_time
from memsvc.models import Entity, EntityMention, HistoryEvent, Job, Memory, MemorySource, Relation
from memsvc.schemas import (
    EntityOut,
    GraphResponse,
    HistoryEventOut,
    HistoryPage,
    JobList,
    JobOut,
    MemoryList,
    MemoryOut,
    RelationOut,
    UpdateRequest,
    UserList,
    UserOut,
    storable_time,
)
from memsvc.tenants import TenantContext

MAX_LIST_LIMIT = 500


def sources_of(session: Session, memory_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """Provenance: the client message ids each memory came from."""
    ids = list(memory_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(MemorySource.memory_id, MemorySource.message_id)
        .where(MemorySource.memory_id.in_(ids))
        .order_by(MemorySource.memory_id, MemorySource.message_id)
    ).all()
    out: dict[uuid.UUID, list[str]] = defaultdict(list)
    for memory_id, message_id in rows:
        out[memory_id].append(message_id)
    return out


def memory_out(memory: Memory, sources: Sequence[str], score: float | None = None) -> MemoryOut:
    return MemoryOut(
        id=memory.id,
        type=memory.type,
        kind=memory.kind,
        content=memory.content,
        score=score,
        user_id=memory.user_id,
        agent_id=memory.agent_id,
        session_id=memory.session_id,
        speaker=memory.speaker,
        role=memory.role,
        created_at=memory.created_at,
        event_at=local_time(memory.event_at, memory.utc_offset),
        valid_from=memory.valid_from,
        valid_to=memory.valid_to,
        status=memory.status,
        pinned=memory.pinned,
        source_message_ids=list(sources),
        metadata=memory.metadata_ or {},
    )


def snapshot(memory: Memory) -> dict[str, Any]:
    """What a history event keeps of a memory's state (its `before` and `after`)."""
    return {
        "content": memory.content,
        "metadata": memory.metadata_,
        "pinned": memory.pinned,
        "status": memory.status,
        "valid_to": memory.valid_to.isoformat() if memory.valid_to else None,
    }


def _record(
    session: Session,
    ctx: TenantContext,
    memory: Memory,
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    actor: str | None = None,
) -> None:
    """Every change goes into history: nothing about a memory changes silently."""
    session.add(
        HistoryEvent(
            tenant_id=ctx.tenant_id,
            user_id=memory.user_id,
            memory_id=memory.id,
            op=op,
            actor=actor or ctx.actor,
            before=before,
            after=after,
        )
    )


def _load(session: Session, ctx: TenantContext, memory_id: uuid.UUID, *, lock: bool = False) -> Memory:
    stmt = select(Memory).where(Memory.id == memory_id, Memory.tenant_id == ctx.tenant_id)
    if lock:
        # Read afresh under the lock, not from what the session read before it.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    memory = session.execute(stmt).scalar_one_or_none()
    if memory is None:
        raise NotFound(f"memory {memory_id} not found")
    return memory


def get_memory(session: Session, ctx: TenantContext, memory_id: uuid.UUID) -> MemoryOut:
    memory = _load(session, ctx, memory_id)
    return memory_out(memory, sources_of(session, [memory.id]).get(memory.id, []))


def _listing(*parts: object) -> str:
    """What a cursor pages through: the listing and its filters (a cursor of another user's list,
    or of the jobs, paged this one from an unrelated place, silently)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _encode_cursor(listing: str, *position: str) -> str:
    """A page's end as a cursor: where the listing `listing` stopped (`_decode_cursor`)."""
    return base64.urlsafe_b64encode(json.dumps([*position, listing]).encode()).decode()


_FOREIGN_CURSOR = "cursor is not one this server issued"
_OTHER_LISTING = (
    "cursor is of another listing (another user, type, status, kind or time window): "
    "page this one from its start"
)
_BIGINT_MAX = 2**63 - 1


def _decode_cursor(cursor: str, listing: str, size: int) -> list[str]:
    """The `size` strings of a cursor of `listing`; another listing's cursor, or none this server
    issued, is `InvalidInput`."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError as exc:
        raise InvalidInput(_FOREIGN_CURSOR) from exc
    # Strings only, and none holding NUL, which PostgreSQL text cannot.
    if not isinstance(decoded, list) or len(decoded) != size + 1:
        raise InvalidInput(_FOREIGN_CURSOR)
    if not all(isinstance(part, str) and "\x00" not in part for part in decoded):
        raise InvalidInput(_FOREIGN_CURSOR)
    *position, of = decoded
    if of != listing:
        raise InvalidInput(_OTHER_LISTING)
    return position


def _cursor_after(listing: str, row: Memory | Job) -> str:
    """The cursor of a newest-first listing that stopped at `row` (`_time_and_id`)."""
    return _encode_cursor(listing, row.created_at.isoformat(), str(row.id))


def _time_and_id(cursor: str, listing: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) a newest-first listing stopped at."""
    created_at, row_id = _decode_cursor(cursor, listing, 2)
    try:
        at = datetime.fromisoformat(created_at)
        # A forged time PostgreSQL cannot hold (naive, or before year 1 in UTC) is the caller's error.
        if at.utcoffset() is None or not storable_time(at):
            raise ValueError(created_at)
        return at, uuid.UUID(row_id)
    except ValueError as exc:
        raise InvalidInput(_FOREIGN_CURSOR) from exc


def list_memories(
    session: Session,
    ctx: TenantContext,
    user_id: str,
    *,
    memory_type: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    session_id: str | None = None,
) -> MemoryList:
    """A user's memories, newest first, one page at a time; optionally only one status, one
    session's (its messages, digest and what was read from them), and only those that happened in
    [since, until): a message when it was said, a fact when it holds from ("I went to the Getty on
    8 May", said on 10 May, happened on 8 May)."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    if memory_type not in (None, "episodic", "semantic"):
        raise InvalidInput(
            "type must be 'episodic' or 'semantic' (see GET /v1/graph for entities and relations)"
        )
    stmt = select(Memory).where(Memory.tenant_id == ctx.tenant_id, Memory.user_id == user_id)
    if memory_type:
        stmt = stmt.where(Memory.type == memory_type)
    if status:
        stmt = stmt.where(Memory.status == status)
    if session_id is not None:
        stmt = stmt.where(Memory.session_id == session_id)
    happened = func.coalesce(Memory.valid_from, Memory.event_at)
    # A day said ("yesterday": its midnight in UTC, `extraction.dates`) is that calendar day, matched
    # against the days of the window as its bounds' own offsets read them.
    said_day = and_(
        Memory.type == "semantic",
        Memory.valid_from != Memory.event_at,
        func.date_trunc("day", Memory.valid_from, "UTC") == Memory.valid_from,
    )
    if since:
        stmt = stmt.where(case((said_day, Memory.valid_from >= _day_of(since)), else_=happened >= since))
    if until:
        stmt = stmt.where(case((said_day, Memory.valid_from < _day_after(until)), else_=happened < until))
    listing = _listing("memories", ctx.tenant_id, user_id, memory_type, status, since, until, session_id)
    if cursor:
        created_at, last_id = _time_and_id(cursor, listing)
        stmt = stmt.where(tuple_(Memory.created_at, Memory.id) < tuple_(created_at, last_id))
    rows = list(
        session.execute(stmt.order_by(Memory.created_at.desc(), Memory.id.desc()).limit(limit + 1)).scalars()
    )
    page, more = rows[:limit], len(rows) > limit
    sources = sources_of(session, [m.id for m in page])
    return MemoryList(
        items=[memory_out(m, sources.get(m.id, [])) for m in page],
        next_cursor=_cursor_after(listing, page[-1]) if more else None,
    )


def update_memory(session: Session, ctx: TenantContext, memory_id: uuid.UUID, patch: UpdateRequest) -> Memory:
    """Apply a PATCH and record it in history. Returns the memory (re-embed if content changed)."""
    memory = _load(session, ctx, memory_id, lock=True)
    before = snapshot(memory)
    if patch.content is not None:
        memory.content = patch.content
    if patch.metadata is not None:
        memory.metadata_ = patch.metadata
    if patch.pinned is not None:
        memory.pinned = patch.pinned
    after = snapshot(memory)
    if after != before:  # an edit that changes nothing is no event
        memory.updated_at = func.now()
        _record(session, ctx, memory, "update", before, after)
    return memory


def passages_of(
    session: Session, tenant_id: uuid.UUID, turn_ids: Sequence[uuid.UUID], *, lock: bool = False
) -> list[Memory]:
    """The passages of these turns: memories of kind `passage` whose provenance is one of them (a
    long message's parts, `memsvc.extraction.passages`), in id order; locked when asked."""
    if not turn_ids:
        return []
    stmt = (
        select(Memory)
        .join(MemorySource, MemorySource.memory_id == Memory.id)
        .where(
            MemorySource.turn_id.in_(list(turn_ids)),
            MemorySource.tenant_id == tenant_id,
            Memory.tenant_id == tenant_id,
            Memory.kind == "passage",
        )
        .order_by(Memory.id)
    )
    if lock:
        stmt = stmt.with_for_update(of=Memory).execution_options(populate_existing=True)
    return list(session.execute(stmt).scalars().unique())


def stated_only_by(session: Session, tenant_id: uuid.UUID, turn_ids: Sequence[uuid.UUID]) -> list[Memory]:
    """The semantic memories these turns state and no other stored turn does (a source whose turn
    was deleted states nothing any more), in id order, locked."""
    if not turn_ids:
        return []
    turns = list(turn_ids)
    other = aliased(MemorySource)
    others = (
        select(other.memory_id)
        .where(other.memory_id == Memory.id, other.turn_id.is_not(None), other.turn_id.not_in(turns))
        .exists()
    )
    stmt = (
        select(Memory)
        .join(MemorySource, MemorySource.memory_id == Memory.id)
        .where(
            MemorySource.turn_id.in_(turns),
            MemorySource.tenant_id == tenant_id,
            Memory.tenant_id == tenant_id,
            Memory.type == "semantic",
            ~others,
        )
        .order_by(Memory.id)
        .with_for_update(of=Memory)
        .execution_options(populate_existing=True)
    )
    return list(session.execute(stmt).scalars().unique())


def delete_memory(session: Session, ctx: TenantContext, memory_id: uuid.UUID) -> list[uuid.UUID]:
    """Delete a memory (its history stays); a turn's passages go with it, and what only it stated
    (`forget_statements`). Returns the ids deleted."""
    memory = _load(session, ctx, memory_id, lock=True)
    turn = [memory.id] if memory.kind == "turn" else []
    forgotten = forget_statements(session, ctx, memory) if turn else []
    rows = [*passages_of(session, ctx.tenant_id, turn, lock=True), memory]
    for row in rows:
        _record(session, ctx, row, "delete", snapshot(row), None)
    delete_rows(session, ctx.tenant_id, rows)
    gone = [*forgotten, *(row.id for row in rows)]
    unsay_in_history(session, ctx.tenant_id, gone)
    return gone


def unsay_in_history(session: Session, tenant_id: uuid.UUID, memory_ids: Sequence[uuid.UUID]) -> None:
    """The history of these memories keeps what was done and when, not what they said: a message
    deleted with a PIN in it stayed readable in its `create` and `delete` events (and a session
    digest rebuilt without it, in the digest's `create`)."""
    if memory_ids:
        session.execute(_UNSAY_IN_HISTORY, {"t": tenant_id, "ids": list(memory_ids)})


_UNSAY_IN_HISTORY = text(
    """
    UPDATE history
    SET before = CASE WHEN jsonb_typeof(before) = 'object'
                      THEN before - CAST('{content,metadata}' AS text[]) ELSE before END,
        after = CASE WHEN jsonb_typeof(after) = 'object'
                     THEN after - CAST('{content,metadata}' AS text[]) ELSE after END
    WHERE tenant_id = :t AND memory_id = ANY(CAST(:ids AS uuid[]))
    """
)


def forget_statements(
    session: Session, ctx: TenantContext, turn: Memory, *, still: frozenset[str] = frozenset()
) -> list[uuid.UUID]:
    """What a turn stated, forgotten ("forget that I said it", or its text was edited): the facts
    only it stated are deleted, each with its event; what other messages state too stays, citing
    those only. What it `still` states after an edit (contents) stays as it is, pinned or not.
    Returns the ids deleted."""
    # A corrected fact whose corrected message is gone is stated only by the correction: both lists.
    both = [*stated_only_by(session, ctx.tenant_id, [turn.id]), *_corrected_by(session, ctx, turn)]
    stated = [row for row in dict.fromkeys(both) if row.content not in still]
    for row in stated:
        _record(session, ctx, row, "delete", snapshot(row), None)
    delete_rows(session, ctx.tenant_id, stated)
    cited = session.execute(
        delete(MemorySource)
        .where(
            MemorySource.tenant_id == ctx.tenant_id,
            MemorySource.turn_id == turn.id,
            MemorySource.memory_id.in_(
                select(Memory.id).where(Memory.type == "semantic", Memory.content.not_in(still))
            ),
        )
        .returning(MemorySource.memory_id)
    ).scalars()
    cited_ids = list(cited)
    if cited_ids:
        # A fact dated by the turn that no longer states it is dated by its earliest other source:
        # the context printed a deleted message's day.
        session.execute(_REDATE, {"ids": cited_ids, "said": turn.event_at})
    touch_feed(session, ctx.tenant_id, cited_ids)
    if turn.message_id:
        _unsay_relations(session, ctx.tenant_id, turn.user_id or "", turn.message_id)
    return [row.id for row in stated]


_REDATE = text(
    """
    UPDATE memories m
    SET valid_from = CASE WHEN m.valid_from = :said THEN first.event_at ELSE m.valid_from END,
        event_at = CASE WHEN m.event_at = :said THEN first.event_at ELSE m.event_at END,
        utc_offset = CASE WHEN m.event_at = :said THEN first.utc_offset ELSE m.utc_offset END
    FROM (
        SELECT DISTINCT ON (s.memory_id) s.memory_id, t.event_at, t.utc_offset
        FROM memory_sources s JOIN memories t ON t.id = s.turn_id
        WHERE s.memory_id = ANY(CAST(:ids AS uuid[]))
        ORDER BY s.memory_id, t.event_at
    ) first
    WHERE m.id = first.memory_id AND (m.valid_from = :said OR m.event_at = :said)
    """
)


def _unsay_relations(session: Session, tenant_id: uuid.UUID, user_id: str, message_id: str) -> None:
    """The graph's relations no longer cite a message; one no other message states goes, and the
    entities nothing else names or relates with it."""
    cited = session.execute(
        update(Relation)
        .where(
            Relation.tenant_id == tenant_id,
            Relation.user_id == user_id,
            Relation.source_message_ids.contains([message_id]),
        )
        .values(source_message_ids=func.array_remove(Relation.source_message_ids, message_id))
        .returning(Relation.id, Relation.source_message_ids)
    ).all()
    if unsaid := [relation_id for relation_id, sources in cited if not sources]:
        ends = session.execute(
            delete(Relation).where(Relation.id.in_(unsaid)).returning(Relation.subject_id, Relation.object_id)
        ).all()
        _drop_unnamed_entities(session, tenant_id, {end for pair in ends for end in pair})


def _corrected_by(session: Session, ctx: TenantContext, turn: Memory) -> list[Memory]:
    """The facts a correction ("Sorry, I meant Tuesday.") states: they cite the messages it corrects
    too (`CORRECTS_KEY`), which did not say them."""
    rows = session.execute(
        select(Memory)
        .join(MemorySource, MemorySource.memory_id == Memory.id)
        .where(
            MemorySource.turn_id == turn.id,
            Memory.tenant_id == ctx.tenant_id,
            Memory.type == "semantic",
            Memory.metadata_.has_key(CORRECTS_KEY),
        )
        .with_for_update(of=Memory)
    ).scalars()
    candidates = list(dict.fromkeys(rows))
    cited = sources_of(session, [row.id for row in candidates])
    return [
        row
        for row in candidates
        if turn.message_id not in row.metadata_[CORRECTS_KEY]
        and set(cited.get(row.id, [])) - {turn.message_id} <= set(row.metadata_[CORRECTS_KEY])
    ]


def forget_mentions(session: Session, tenant_id: uuid.UUID, memory_id: uuid.UUID) -> None:
    """A memory names no entity any more (its text is read again); entities nothing else names or
    relates go."""
    mentions = delete(EntityMention).where(EntityMention.memory_id == memory_id)
    named = set(session.execute(mentions.returning(EntityMention.entity_id)).scalars())
    recount_mentions(session, named)
    _drop_unnamed_entities(session, tenant_id, named)


_FEED_UPDATE = text(
    "INSERT INTO memory_changes (tenant_id, memory_id, op) SELECT :t, unnest(CAST(:ids AS uuid[])), 'U'"
)


def touch_feed(session: Session, tenant_id: uuid.UUID, memory_ids: Sequence[uuid.UUID]) -> None:
    """Put memories in the change feed after an edit of what its trigger does not watch (provenance,
    metadata, pinned, use statistics), which every process's cached corpora read."""
    if memory_ids:
        session.execute(_FEED_UPDATE, {"t": tenant_id, "ids": list(memory_ids)})


def delete_rows(session: Session, tenant_id: uuid.UUID, rows: Sequence[Memory]) -> None:
    """Delete memories (their history is the caller's) and what the graph held only through them,
    or a deleted fact is still readable at GET /v1/graph: the relations they stated (their sentence
    is the memory's; the foreign key would only unlink them), then the entities that nothing else
    names or relates any more."""
    ids = [row.id for row in rows]
    named = set(
        session.execute(select(EntityMention.entity_id).where(EntityMention.memory_id.in_(ids))).scalars()
    )
    session.execute(delete(Relation).where(Relation.tenant_id == tenant_id, Relation.memory_id.in_(ids)))
    for row in rows:
        session.delete(row)
    session.flush()
    recount_mentions(session, named)
    _drop_unnamed_entities(session, tenant_id, named)


def recount_mentions(session: Session, entity_ids: Iterable[uuid.UUID]) -> None:
    """Each entity's `mention_count` as the messages that name it now (its mentions): counted, not
    added to, so a message read again after an edit, or deleted, counts once or not at all."""
    if ids := sorted(set(entity_ids)):
        mentions = (
            select(func.count())
            .where(EntityMention.entity_id == Entity.id)
            .correlate(Entity)
            .scalar_subquery()
        )
        session.execute(update(Entity).where(Entity.id.in_(ids)).values(mention_count=mentions))


def _day_of(at: datetime) -> datetime:
    """The calendar day `at` falls on in its own offset, as a day said is stored: midnight UTC."""
    return datetime.combine(at.date(), time(0), tzinfo=UTC)


def _day_after(until: datetime) -> datetime:
    """The first day a window that ends at `until` leaves out (its day, unless it has begun)."""
    started = until.time() != time(0)
    return _day_of(until) + timedelta(days=1 if started else 0)


def stated_now(
    session: Session, tenant_id: uuid.UUID, user_id: str, hashes: Sequence[str]
) -> dict[str, tuple[uuid.UUID, str, int]]:
    """The user's current semantic memories with these content hashes: hash → (id, kind, number of
    messages that state it); of several with one hash, the one stated by the fewest."""
    if not hashes:
        return {}
    cited = select(func.count()).where(MemorySource.memory_id == Memory.id).scalar_subquery()
    rows = session.execute(
        select(Memory.content_hash, Memory.id, Memory.kind, cited)
        .where(
            Memory.tenant_id == tenant_id,
            Memory.user_id == user_id,
            Memory.type == "semantic",
            Memory.status == "active",
            Memory.content_hash.in_(list(hashes)),
        )
        .order_by(cited.desc(), Memory.id)
    ).all()
    return {h: (memory_id, kind, n) for h, memory_id, kind, n in rows}


def known_people(session: Session, tenant_id: uuid.UUID, user_id: str) -> list[str]:
    """The names of the people in the user's graph."""
    return list(
        session.execute(
            select(Entity.name).where(
                Entity.tenant_id == tenant_id, Entity.user_id == user_id, Entity.entity_type == "person"
            )
        ).scalars()
    )


def hold_from_earlier(
    session: Session, tenant_id: uuid.UUID, user_id: str, earliest: dict[uuid.UUID, datetime], actor: str
) -> int:
    """Facts said again in messages older than the one that first stated them (older history sent
    later) hold from then: their `valid_from` moves back, recorded in history, unless another value
    of their attribute began in between (the older message is of a time the fact does not cover).
    Returns how many moved."""
    moved = 0
    for memory_id, said_at in sorted(earliest.items()):
        memory = session.get(Memory, memory_id, with_for_update=True, populate_existing=True)
        if memory is None or memory.valid_from is None or said_at >= memory.valid_from:
            continue
        if (
            memory.attribute is not None
            and session.execute(
                select(Memory.id)
                .where(
                    Memory.tenant_id == tenant_id,
                    Memory.user_id == user_id,
                    Memory.subject == memory.subject,
                    Memory.attribute == memory.attribute,
                    Memory.id != memory.id,
                    Memory.valid_from >= said_at,
                    Memory.valid_from < memory.valid_from,
                )
                .limit(1)
            ).first()
        ):
            continue
        before = {"valid_from": memory.valid_from.isoformat()}
        memory.valid_from, memory.updated_at = said_at, func.now()
        session.add(
            HistoryEvent(
                tenant_id=tenant_id,
                user_id=user_id,
                memory_id=memory.id,
                op="update",
                actor=actor,
                before=before,
                after={"valid_from": said_at.isoformat()},
            )
        )
        moved += 1
    return moved


def drop_graph_of_no_memories(session: Session, tenant_id: uuid.UUID, user_id: str) -> None:
    """A user whose every memory is deleted has no graph either: the speaker's own entity is named
    by no mention (`extraction.rules`), so it outlived the messages that named it."""
    if not has_memories(session, tenant_id, user_id):
        session.execute(delete(Relation).where(Relation.tenant_id == tenant_id, Relation.user_id == user_id))
        session.execute(delete(Entity).where(Entity.tenant_id == tenant_id, Entity.user_id == user_id))


def _drop_unnamed_entities(session: Session, tenant_id: uuid.UUID, named: set[uuid.UUID]) -> None:
    """Of the entities `named`, those no memory names and no relation links any more."""
    if not named:
        return
    kept = set(
        session.execute(select(EntityMention.entity_id).where(EntityMention.entity_id.in_(named))).scalars()
    )
    for end in (Relation.subject_id, Relation.object_id):
        kept.update(session.execute(select(end).where(end.in_(named))).scalars())
    if gone := named - kept:
        session.execute(delete(Entity).where(Entity.tenant_id == tenant_id, Entity.id.in_(gone)))


def history(session: Session, ctx: TenantContext, memory_id: uuid.UUID) -> list[HistoryEventOut]:
    rows = list(
        session.execute(
            select(HistoryEvent)
            .where(HistoryEvent.tenant_id == ctx.tenant_id, HistoryEvent.memory_id == memory_id)
            .order_by(HistoryEvent.id)
        ).scalars()
    )
    if not rows:
        # A memory without events (a session digest made before they had one) has [], not a 404.
        _load(session, ctx, memory_id)
    return [_history_out(r) for r in rows]


def _history_out(event: HistoryEvent) -> HistoryEventOut:
    return HistoryEventOut(
        op=event.op,
        memory_id=event.memory_id,
        at=event.at,
        actor=event.actor,
        before=event.before,
        after=event.after,
        run_id=event.run_id,
    )


def user_history(
    session: Session,
    ctx: TenantContext,
    user_id: str,
    *,
    run_id: uuid.UUID | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> HistoryPage:
    """A user's history events across memories, newest first (deleted memories' included), or
    only those one consolidation run made."""
    stmt = select(HistoryEvent).where(
        HistoryEvent.tenant_id == ctx.tenant_id, HistoryEvent.user_id == user_id
    )
    if run_id is not None:
        stmt = stmt.where(HistoryEvent.run_id == run_id)
    listing = _listing("history", ctx.tenant_id, user_id, run_id)
    if cursor:
        (last,) = _decode_cursor(cursor, listing, 1)
        try:
            before = int(last)
        except ValueError as exc:
            raise InvalidInput(_FOREIGN_CURSOR) from exc
        if not 0 < before <= _BIGINT_MAX:  # event ids are positive bigints
            raise InvalidInput(_FOREIGN_CURSOR)
        stmt = stmt.where(HistoryEvent.id < before)
    rows = list(session.execute(stmt.order_by(HistoryEvent.id.desc()).limit(limit + 1)).scalars())
    page = rows[:limit]
    more = len(rows) > limit
    return HistoryPage(
        events=[_history_out(r) for r in page],
        next_cursor=_encode_cursor(listing, str(page[-1].id)) if more else None,
    )


def has_memories(session: Session, tenant_id: uuid.UUID, user_id: str) -> bool:
    """Whether the user holds any memory in the tenant (one index probe)."""
    stmt = select(Memory.id).where(Memory.tenant_id == tenant_id, Memory.user_id == user_id).limit(1)
    return session.execute(stmt).first() is not None


def list_users(
    session: Session, ctx: TenantContext, *, limit: int = 100, cursor: str | None = None
) -> UserList:
    """The tenant's user ids that have memories, in id order, with their memory counts (one index
    scan of `ix_memories_scope` per page)."""
    stmt = select(Memory.user_id, func.count(), func.max(Memory.created_at)).where(
        Memory.tenant_id == ctx.tenant_id
    )
    listing = _listing("users", ctx.tenant_id)
    if cursor:
        (after,) = _decode_cursor(cursor, listing, 1)
        stmt = stmt.where(Memory.user_id > after)
    rows = session.execute(stmt.group_by(Memory.user_id).order_by(Memory.user_id).limit(limit + 1)).all()
    page = rows[:limit]
    return UserList(
        users=[UserOut(user_id=u, memories=n, last_created_at=last) for u, n, last in page],
        next_cursor=_encode_cursor(listing, page[-1][0]) if len(rows) > limit else None,
    )


def job_out(job: Job) -> JobOut:
    return JobOut(
        job_id=job.id,
        status=job.status,
        kind=job.kind,
        error=job.error,
        result=job.result,
        user_id=job.user_id,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


def list_jobs(
    session: Session,
    ctx: TenantContext,
    *,
    user_id: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> JobList:
    """The tenant's jobs, newest first, optionally of one user, status or kind."""
    stmt = select(Job).options(defer(Job.payload)).where(Job.tenant_id == ctx.tenant_id)
    if user_id is not None:
        stmt = stmt.where(Job.user_id == user_id)
    if status:
        stmt = stmt.where(Job.status == status)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    listing = _listing("jobs", ctx.tenant_id, user_id, status, kind)
    if cursor:
        created_at, last_id = _time_and_id(cursor, listing)
        stmt = stmt.where(tuple_(Job.created_at, Job.id) < tuple_(created_at, last_id))
    rows = list(
        session.execute(stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)).scalars()
    )
    page = rows[:limit]
    return JobList(
        jobs=[job_out(j) for j in page],
        next_cursor=_cursor_after(listing, page[-1]) if len(rows) > limit else None,
    )


def delete_user(session: Session, ctx: TenantContext, user_id: str) -> int:
    """Erase every row of one user of one tenant, and nothing else. Returns memories removed."""
    scope = {"tenant_id": ctx.tenant_id, "user_id": user_id}
    # Children first keeps this independent of cascade settings.
    for table in (EntityMention, MemorySource, Relation, HistoryEvent, Job):
        session.execute(delete(table).filter_by(**scope))
    session.execute(delete(Entity).filter_by(**scope))
    result = cast(CursorResult[Any], session.execute(delete(Memory).filter_by(**scope)))
    return int(result.rowcount or 0)


def graph(
    session: Session, ctx: TenantContext, user_id: str, *, entity: str | None = None, depth: int = 1
) -> GraphResponse:
    """A user's graph, or the neighbourhood of `entity` up to `depth` hops."""
    if not 0 <= depth <= 3:
        raise InvalidInput("depth must be between 0 and 3")
    scope = and_(Entity.tenant_id == ctx.tenant_id, Entity.user_id == user_id)
    relation_scope = and_(Relation.tenant_id == ctx.tenant_id, Relation.user_id == user_id)
    if entity is None:
        entity_ids = set(session.execute(select(Entity.id).where(scope).limit(5000)).scalars())
    else:
        from memsvc.ingest import normalize_name

        key = normalize_name(entity)
        seeds = set(
            session.execute(
                select(Entity.id).where(
                    scope, or_(Entity.normalized_name == key, Entity.aliases.contains([entity]))
                )
            ).scalars()
        )
        if not seeds:
            raise NotFound(f"entity {entity!r} not found for user {user_id!r}")
        entity_ids, frontier = set(seeds), set(seeds)
        for _ in range(depth):
            edges = session.execute(
                select(Relation.subject_id, Relation.object_id).where(
                    relation_scope, or_(Relation.subject_id.in_(frontier), Relation.object_id.in_(frontier))
                )
            ).all()
            frontier = {n for edge in edges for n in edge} - entity_ids
            entity_ids |= frontier
    entities = list(session.execute(select(Entity).where(scope, Entity.id.in_(entity_ids))).scalars())
    subject, obj, fact = aliased(Entity), aliased(Entity), aliased(Memory)
    relations = session.execute(
        select(Relation, subject.name, obj.name, fact.valid_to)
        .join(subject, Relation.subject_id == subject.id)
        .join(obj, Relation.object_id == obj.id)
        .outerjoin(fact, fact.id == Relation.memory_id)
        .where(relation_scope, Relation.subject_id.in_(entity_ids), Relation.object_id.in_(entity_ids))
    ).all()
    mention_sources = _entity_sources(session, [e.id for e in entities])
    return GraphResponse(
        entities=[
            EntityOut(
                id=e.id,
                name=e.name,
                type=e.entity_type,
                aliases=list(e.aliases or []),
                mention_count=e.mention_count,
                source_message_ids=mention_sources.get(e.id, []),
            )
            for e in entities
        ],
        relations=[
            RelationOut(
                id=r.id,
                subject=s,
                predicate=r.predicate,
                object=o,
                fact=r.fact,
                valid_from=r.valid_from,
                # A relation holds while the fact it was read from does: "Ann lives_in Chicago"
                # ends when "I live in Boston now" closes "Ann lives in Chicago".
                valid_to=r.valid_to or fact_ended,
                source_message_ids=list(r.source_message_ids or []),
            )
            for r, s, o, fact_ended in relations
        ],
    )


def _entity_sources(session: Session, entity_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    if not entity_ids:
        return {}
    rows = session.execute(
        select(EntityMention.entity_id, Memory.message_id)
        .join(Memory, Memory.id == EntityMention.memory_id)
        .where(EntityMention.entity_id.in_(entity_ids), Memory.message_id.is_not(None))
        .order_by(EntityMention.entity_id, Memory.message_id)
    ).all()
    out: dict[uuid.UUID, list[str]] = defaultdict(list)
    for entity_id, message_id in rows:
        if message_id:
            out[entity_id].append(message_id)
    return out


def commit_without_waiting(session: Session) -> None:
    """Let this transaction's commit return before its WAL reaches the disk (`synchronous_commit`
    off, for this transaction alone): for writes that a later commit which does wait makes durable
    (WAL is flushed in order), or that recovery redoes. Others see them at once; only a database
    crash within a fraction of a second (the WAL writer's delay) can lose them."""
    session.execute(text("SET LOCAL synchronous_commit = off"))


def mark_job_running(session: Session, job_id: uuid.UUID, runner: str | None, attempt: int | None) -> None:
    """Mark a queued job running in process `runner`, as the queue's `attempt` (a retry of one
    whose worker died finds it running: its clock starts again). Committed without waiting for the
    disk: a status lost in a database crash only shows the job queued again, and the job's own
    commit, which waits, makes it durable; the wait was the largest part of this step."""
    commit_without_waiting(session)
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(("queued", "running")))
        .values(status="running", runner=runner, runner_attempt=attempt, updated_at=func.now())
    )


class RunningJob(NamedTuple):
    id: uuid.UUID
    runner: str
    queue_job: int  # the queue's (procrastinate's) id of the attempt that runs it


def running_jobs_on(session: Session, machine: str) -> list[RunningJob]:
    """Jobs running in a process of `machine` (memsvc.workers.liveness) whose attempt the queue
    still counts as running: the same attempt, not a retry that another worker has just fetched
    and not yet marked as its own."""
    return [
        RunningJob(*row)
        for row in session.execute(
            text(
                """
                SELECT j.id, j.runner, p.id FROM jobs j
                JOIN procrastinate_jobs p ON p.queueing_lock = j.id::text AND p.status = 'doing'
                                           AND p.attempts = j.runner_attempt
                WHERE j.status = 'running' AND starts_with(j.runner, :machine || '/')
                """
            ),
            {"machine": machine},
        )
    ]


JOB_DONE_CHANNEL = "memsvc_job_done"


def notify_job_done(session: Session, job_id: uuid.UUID) -> None:
    """Tell requests waiting on the job (`LISTEN memsvc_job_done`, payload: its id) that it has
    finished. Sent in a transaction of its own after the job's commit, which does not wait for the
    disk: PostgreSQL commits notifying transactions one at a time under a global lock held through
    the WAL flush (bench/commit_notify.py), and the job's own commit must not queue behind other workers'."""
    commit_without_waiting(session)
    session.execute(text("SELECT pg_notify(:channel, :id)"), {"channel": JOB_DONE_CHANNEL, "id": str(job_id)})


def get_job(session: Session, ctx: TenantContext, job_id: uuid.UUID) -> Job:
    """A job without its payload (the request's messages, up to thousands of them): what a job
    says of itself (`job_out`) does not include it, and a waiting add reads its job each time it
    is woken."""
    job = session.execute(
        select(Job).options(defer(Job.payload)).where(Job.id == job_id, Job.tenant_id == ctx.tenant_id)
    ).scalar_one_or_none()
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


@dataclass(frozen=True, slots=True)
class QueueHealth:
    """What an operator needs to see of ingest: backlog, its age, and whether workers are alive."""

    jobs_queued: int
    jobs_running: int
    oldest_queued_s: float
    longest_running_s: float
    live_workers: int


def queue_health(session: Session, heartbeat_within_s: float) -> QueueHealth:
    """Backlog and worker liveness of every tenant (open jobs only: the partial index keeps this cheap
    however many finished jobs there are)."""
    row = session.execute(
        text(
            """
            SELECT count(*) FILTER (WHERE status = 'queued'),
                   count(*) FILTER (WHERE status = 'running'),
                   coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'queued')), 0),
                   coalesce(extract(epoch FROM now() - min(updated_at) FILTER (WHERE status = 'running')), 0),
                   (SELECT count(*) FROM procrastinate_workers
                     WHERE last_heartbeat > now() - make_interval(secs => :within))
            FROM jobs WHERE status IN ('queued', 'running')
            """
        ),
        {"within": heartbeat_within_s},
    ).one()
    return QueueHealth(int(row[0]), int(row[1]), float(row[2]), float(row[3]), int(row[4]))


def queued_jobs_of(session: Session, tenant_id: uuid.UUID, at_most: int) -> int:
    """How many of the tenant's jobs wait in the queue, counted up to `at_most` (enough to compare
    with a limit, and bounded however long the backlog is)."""
    return int(
        session.execute(
            text(
                "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE tenant_id = :t AND status = 'queued' "
                "LIMIT :n) AS waiting"
            ),
            {"t": tenant_id, "n": at_most},
        ).scalar_one()
    )


class OrphanedJob(NamedTuple):
    id: uuid.UUID
    kind: str
    tenant_id: uuid.UUID
    user_id: str | None


def orphaned_jobs(session: Session, older_than_s: float) -> list[OrphanedJob]:
    """Accepted jobs the queue does not hold (deferring failed, e.g. while the database restarted),
    oldest first."""
    return list(
        OrphanedJob(*row)
        for row in session.execute(
            text(
                """
                SELECT j.id, j.kind, j.tenant_id, j.user_id FROM jobs j
                WHERE j.status = 'queued' AND j.updated_at < now() - make_interval(secs => :age)
                  AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs p
                                  WHERE p.queueing_lock = j.id::text AND p.status IN ('todo', 'doing'))
                ORDER BY j.created_at
                """
            ),
            {"age": older_than_s},
        )
    )


# -- bulk writes ----------------------------------------------------------------------------
#
# Ingest writes every table of a batch in one statement: `INSERT ... SELECT FROM unnest(...)` with
# one array parameter per column, sent in psycopg's binary format. The SQL text depends only on the
# table and columns, so psycopg parses it once and the server prepares it once; vectors travel as
# halfvec's binary wire format, not as 7 KB of decimal text each (the multi-row VALUES statements
# this replaces spent more time in the client, formatting vectors and splitting a new query string
# of thousands of placeholders per batch, than the server spent storing the rows).

_HALFVEC_INFO = "memsvc.halfvec_type_info"  # key of the cached TypeInfo in a pooled connection's info


class _HalfvecBytes:
    """One vector in halfvec's binary wire format: dim and a zero (int16 each), then big-endian halves."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def halfvec_binary(vectors: Any) -> list[_HalfvecBytes]:
    """Rows of `vectors` (anything numpy takes) as halfvec wire values, rounded to half as pgvector does."""
    array = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    header = struct.pack(">HH", array.shape[1], 0)
    halves = array.astype(">f2")
    return [_HalfvecBytes(header + row.tobytes()) for row in halves]


class _HalfvecDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: _HalfvecBytes) -> Buffer | None:
        return obj.data


def _raw_cursor(session: Session) -> psycopg.Cursor[Any]:
    """A cursor of the session's own connection (same transaction) that sends halfvec in binary."""
    fairy = session.connection().connection
    conn = cast(psycopg.Connection[Any], fairy.driver_connection)
    info = fairy.info.get(_HALFVEC_INFO)
    if info is None:
        info = fairy.info[_HALFVEC_INFO] = TypeInfo.fetch(conn, "halfvec")
    if info is None:
        raise RuntimeError("the halfvec type (pgvector >= 0.7) is not installed")
    cursor = conn.cursor()
    info.register(cursor)
    cursor.adapters.register_dumper(
        _HalfvecBytes, type("HalfvecDumper", (_HalfvecDumper,), {"oid": info.oid})
    )
    return cursor


def _column_default(column: Column[Any]) -> tuple[bool, Any]:
    default = column.default
    if default is None or not isinstance(default, ColumnDefault):
        return False, None
    if default.is_callable:
        return True, default.arg(None)
    return True, default.arg


def bulk_insert(
    session: Session,
    model: type[Any],
    rows: Sequence[dict[str, Any]],
    *,
    conflict: str = "DO NOTHING",
    returning: str | None = None,
) -> list[tuple[Any, ...]]:
    """Insert `rows` (keyed by ORM attribute names) into `model`'s table in one round trip.

    Columns no row names take their Python-side default, as the ORM would give them; `conflict`
    is what follows `ON CONFLICT` (default: skip rows whose key exists); `returning` is a column
    list whose values come back for the rows actually inserted or updated."""
    if not rows:
        return []
    mapper = sa_inspect(model)
    table = mapper.local_table
    named = set().union(*(row.keys() for row in rows))
    columns: list[tuple[str, Column[Any]]] = []
    for attr, column in mapper.columns.items():
        if column.computed is not None or column.table is not table:
            continue
        has_default, _ = _column_default(column)
        if attr in named or has_default:
            columns.append((attr, column))
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    selects: list[str] = []
    unnests: list[str] = []
    params: list[list[Any]] = []
    for i, (attr, column) in enumerate(columns):
        sql_type = column.type.compile(dialect=dialect)
        has_default, default = _column_default(column)
        if has_default and isinstance(default, (dict, list)):
            values = [row[attr] if attr in row else type(default)() for row in rows]
        else:
            values = [row.get(attr, default) for row in rows]
        name = f"c{i}"
        if isinstance(column.type, ARRAY):
            # unnest flattens arrays of arrays: a per-row array travels as JSON and is rebuilt.
            params.append([None if v is None else Jsonb(list(v)) for v in values])
            unnests.append("%b::jsonb[]")
            selects.append(
                f"CASE WHEN u.{name} IS NULL THEN NULL ELSE "
                f"ARRAY(SELECT jsonb_array_elements_text(u.{name}))::{sql_type} END"
            )
            continue
        if isinstance(column.type, JSONB):
            params.append([None if v is None else Jsonb(v) for v in values])
        elif isinstance(column.type, HALFVEC):
            present = [v for v in values if v is not None]
            encoded = iter(halfvec_binary(present)) if present else iter(())
            params.append([None if v is None else next(encoded) for v in values])
        else:
            params.append(values)
        unnests.append(f"%b::{sql_type}[]")
        selects.append(f"u.{name}")
    names = ", ".join(f"c{i}" for i in range(len(columns)))
    sql = (
        f"INSERT INTO {table.name} ({', '.join(c.name for _, c in columns)}) "
        f"SELECT {', '.join(selects)} FROM unnest({', '.join(unnests)}) AS u({names}) "
        f"ON CONFLICT {conflict}"
    )
    if returning:
        sql += f" RETURNING {returning}"
    with _raw_cursor(session) as cursor:
        cursor.execute(sql, params, binary=True)
        return [tuple(r) for r in cursor.fetchall()] if returning else []
