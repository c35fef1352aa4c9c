"""Consolidation against the database: read a user's rows, apply the plans of
`memsvc.consolidation` in bounded transactions, and record every change in history.

Each transaction takes the user's ingest lock (the one `MemoryService` ingest and erasure take),
so a batch of changes and an ingest of the same user never interleave, and each change checks
again, under that lock, that the rows are still as planned: a row that an ingest, an edit or an
erasure changed since the plan is left for the next run. Nothing a concurrent ingest writes is
ever touched by a plan made before it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import REAL, cast, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.orm import Session

from memsvc.consolidation import (
    STOPPED,
    ConsolidationConfig,
    EntityRow,
    EventRow,
    Merge,
    RetentionRow,
    SlotFact,
    Supersede,
    fact_slot,
    in_exchange,
    is_an_end,
    merge_row,
    merged_fields,
    names_plan,
    never_valid,
    plan_entity_merges,
    plan_forgetting,
    plan_merges,
    plan_summaries,
    plan_supersessions,
    state_slot,
    stored_slot,
    supersession_keys,
)
from memsvc.database import Database
from memsvc.embedding import Embedder
from memsvc.errors import InvalidInput
from memsvc.models import Entity, EntityMention, HistoryEvent, Memory, MemorySource, Relation
from memsvc.store import delete_rows, passages_of, recount_mentions, stated_only_by, touch_feed

log = logging.getLogger(__name__)

_SUMMARY_NAMESPACE = uuid.UUID("0b6f7a3c-8d7e-4c55-9a31-6f0c2b7d9e42")
SEMANTIC_KINDS = ("fact", "preference", "plan", "event")


def lock_user(session: Session, tenant_id: uuid.UUID, user_id: str) -> None:
    """The user's ingest lock (same key as `memsvc.service`'s), for this transaction."""
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"{tenant_id}/{user_id}"}
    )


@contextmanager
def run_lock(database: Database, tenant_id: uuid.UUID, user_id: str) -> Iterator[bool]:
    """One consolidation run per user at a time, whatever the number of workers: a session-level
    advisory lock on a connection of its own, held for the run. Yields False when another run
    holds it."""
    key = f"consolidate/{tenant_id}/{user_id}"
    with database.engine.connect() as conn:
        got = bool(
            conn.execute(text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"), {"k": key}).scalar()
        )
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": key})
                conn.commit()


def users_to_consolidate(session: Session, tenant_id: uuid.UUID | None) -> list[tuple[uuid.UUID, str]]:
    """(tenant, user) pairs that have memories, in a stable order."""
    stmt = select(Memory.tenant_id, Memory.user_id).distinct().order_by(Memory.tenant_id, Memory.user_id)
    if tenant_id is not None:
        stmt = stmt.where(Memory.tenant_id == tenant_id)
    return [(t, u) for t, u in session.execute(stmt).all()]


# -- history ------------------------------------------------------------------------------------


def _snapshot(row: Any) -> dict[str, Any]:
    return {
        "content": row.content,
        "status": row.status,
        "valid_from": row.valid_from.isoformat() if row.valid_from else None,
        "valid_to": row.valid_to.isoformat() if row.valid_to else None,
        "superseded_by": str(row.superseded_by) if row.superseded_by else None,
    }


def _event(
    tenant_id: uuid.UUID,
    user_id: str,
    memory_id: uuid.UUID,
    op: str,
    actor: str,
    run_id: uuid.UUID | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "user_id": user_id,
        "memory_id": memory_id,
        "op": op,
        "actor": actor,
        "run_id": run_id,
        "before": before,
        "after": after,
    }


# -- supersession -------------------------------------------------------------------------------


def _slot_facts(
    session: Session, tenant_id: uuid.UUID, user_id: str, keys: set[tuple[str, str]] | None
) -> list[SlotFact]:
    stmt = select(
        Memory.id,
        Memory.subject,
        Memory.attribute,
        Memory.content,
        Memory.valid_from,
        Memory.event_at,
        Memory.status,
        Memory.superseded_by,
        Memory.valid_to,
    ).where(
        Memory.tenant_id == tenant_id,
        Memory.user_id == user_id,
        Memory.attribute.is_not(None),
        Memory.status.in_(("active", "superseded")),
    )
    if keys is not None:
        subjects = sorted({s for s, _ in keys})
        stmt = stmt.where(Memory.subject.in_(subjects), Memory.attribute.in_(sorted({a for _, a in keys})))
    out = []
    for row in session.execute(stmt).all():
        if never_valid(row.valid_from, row.valid_to):
            continue  # a corrected fact, valid at no time, is no value of its attribute
        slot = stored_slot(row.content, row.subject or "", row.attribute)
        if slot is None:
            continue
        out.append(
            SlotFact(
                row.id,
                row.subject or "",
                slot.attribute,
                slot.value,
                row.valid_from or row.event_at,
                row.event_at,
                row.status,
                row.superseded_by,
                row.valid_to,
                row.content,
            )
        )
    return out


def apply_supersessions(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    plans: Sequence[Supersede],
    actor: str,
    run_id: uuid.UUID | None = None,
) -> int:
    """Close each old fact with `valid_to` and a link to its successor; both stay, in time."""
    done = 0
    for plan in plans:
        rows = {
            r.id: r
            for r in session.execute(
                select(Memory)
                .where(
                    Memory.id.in_([plan.old_id, plan.new_id]),
                    Memory.tenant_id == tenant_id,
                    Memory.user_id == user_id,
                    Memory.status.in_(("active", "superseded")),
                )
                .with_for_update()
            ).scalars()
        }
        old = rows.get(plan.old_id)
        if old is None or plan.new_id not in rows:
            continue  # changed since the plan: the next run decides again
        before = _snapshot(old)
        closed_with = old.superseded_by if old.status == "superseded" else None
        old.status, old.superseded_by, old.valid_to = "superseded", plan.new_id, plan.valid_to
        old.updated_at = func.now()
        session.flush()
        events = [_event(tenant_id, user_id, old.id, "supersede", actor, run_id, before, _snapshot(old))]
        # The turn that said it ("I live in Denver.") goes out of date with it, unless it says
        # something else still true: otherwise it outranks the current value for questions about now.
        # A turn closed with the fact before (a value between the two came in later) moves with it.
        for turn in _stale_turns(session, tenant_id, old.id):
            memory = session.get(Memory, turn, with_for_update=True)
            if memory is None:
                continue
            moved = (
                memory.status == "superseded"
                and closed_with is not None
                and memory.superseded_by == closed_with
            )
            if memory.status != "active" and not moved:
                continue
            turn_before = _snapshot(memory)
            memory.status, memory.superseded_by, memory.valid_to = "superseded", plan.new_id, plan.valid_to
            memory.updated_at = func.now()
            events.append(
                _event(
                    tenant_id, user_id, memory.id, "supersede", actor, run_id, turn_before, _snapshot(memory)
                )
            )
        session.flush()
        session.execute(insert(HistoryEvent), events)
        done += 1
    return done


# Each source turn of a fact, with the facts of that turn still active (none: NULLs).
_TURN_FACTS = text(
    """
    SELECT s.turn_id, m.content, m.subject, m.attribute
    FROM memory_sources s
    JOIN memory_sources o ON o.turn_id = s.turn_id AND o.tenant_id = s.tenant_id
    LEFT JOIN memories m ON m.id = o.memory_id AND m.type = 'semantic' AND m.status = 'active'
    WHERE s.memory_id = :fact AND s.tenant_id = :t AND s.turn_id IS NOT NULL
    """
)


def _stale_turns(session: Session, tenant_id: uuid.UUID, fact_id: uuid.UUID) -> list[uuid.UUID]:
    """Source turns of a fact that state no other fact still active but ends ("Rex died. We
    adopted Bruno." is out of date once Bruno is gone: the death is past news), and the passages of
    those turns (a long message's parts are closed with it)."""
    current: dict[uuid.UUID, bool] = {}
    for turn_id, content, subject, attribute in session.execute(
        _TURN_FACTS, {"fact": fact_id, "t": tenant_id}
    ):
        states = content is not None and not is_an_end(content, subject or "", attribute)
        current[turn_id] = current.get(turn_id, False) or states
    stale = [turn for turn, states in current.items() if not states]
    if not stale:
        return []
    passages = session.execute(
        select(MemorySource.memory_id)
        .join(Memory, Memory.id == MemorySource.memory_id)
        .where(MemorySource.turn_id.in_(stale), MemorySource.tenant_id == tenant_id, Memory.kind == "passage")
    ).scalars()
    return [*stale, *passages]


def supersede_at_ingest(
    session: Session, tenant_id: uuid.UUID, user_id: str, keys: set[tuple[str, str]], actor: str
) -> int:
    """After an ingest wrote facts about `keys` ((subject, attribute) pairs): close the values
    they replace (or, for a batch of older messages, close the new facts themselves)."""
    if not keys:
        return 0
    keys = supersession_keys(keys)
    facts = [f for f in _slot_facts(session, tenant_id, user_id, keys) if (f.subject, f.attribute) in keys]
    return apply_supersessions(session, tenant_id, user_id, plan_supersessions(facts), actor)


def kin_keys(session: Session, tenant_id: uuid.UUID, user_id: str) -> list[tuple[str, str]]:
    """The (subject, attribute) pairs of the user's facts about someone of a subject's, named
    ("sister emma: residence"; see `consolidation.kin_named`), current or not."""
    rows = session.execute(
        select(Memory.subject, Memory.attribute)
        .where(
            Memory.tenant_id == tenant_id,
            Memory.user_id == user_id,
            Memory.subject.is_not(None),
            Memory.attribute.like("%: %"),
        )
        .distinct()
    ).all()
    return [(subject or "", attribute or "") for subject, attribute in rows]


def tag_stopped_states(
    session: Session, tenant_id: uuid.UUID, user_id: str, new_rows: Sequence[dict[str, Any]]
) -> None:
    """Before a batch's memories are written: give the state a subject stopped (`STOPPED`: "Sam is
    no longer vegetarian") to the facts that state it, so that supersession orders them: the new
    facts that hold its words ("Sam is vegetarian again"), and, when this batch stops a state for
    the first time, the subject's stored present-tense facts that do ("Sam is vegetarian")."""
    facts = [r for r in new_rows if r["type"] == "semantic" and r.get("subject")]
    if not facts:
        return
    stopping = {(r["subject"], r["attribute"]) for r in facts if str(r.get("attribute")).startswith(STOPPED)}
    known = {
        (subject or "", attribute or "")
        for subject, attribute in session.execute(
            select(Memory.subject, Memory.attribute)
            .where(
                Memory.tenant_id == tenant_id,
                Memory.user_id == user_id,
                Memory.subject.in_(sorted({r["subject"] for r in facts})),
                Memory.attribute.startswith(STOPPED),
            )
            .distinct()
        ).all()
    }
    states = sorted(stopping | known)
    for row in facts:
        if row.get("attribute") is None and row["kind"] in _STATE_KINDS:
            row["attribute"] = _state_stated(row["content"], row["subject"], states)
    for subject, attribute in sorted(stopping - known):
        stored = _said_of(
            session, tenant_id, user_id, subject, Memory.attribute.is_(None), Memory.kind.in_(_STATE_KINDS)
        )
        stating = [memory_id for memory_id, content in stored if _states(content, subject, attribute)]
        if stating:
            session.execute(update(Memory).where(Memory.id.in_(stating)).values(attribute=attribute))


def _said_of(
    session: Session, tenant_id: uuid.UUID, user_id: str, subject: str, *where: Any
) -> Sequence[Any]:
    """(id, content) of the subject's current semantic memories that meet `where`."""
    return session.execute(
        select(Memory.id, Memory.content).where(
            Memory.tenant_id == tenant_id,
            Memory.user_id == user_id,
            Memory.subject == subject,
            Memory.type == "semantic",
            Memory.status == "active",
            *where,
        )
    ).all()


# What holds until it stops ("Sam drinks coffee every morning"); an event ("Sam tried coffee") does
# not, nor does a plan, whose time is when it is to happen, not when it was said.
_STATE_KINDS = ("fact", "preference")


def _states(content: str, subject: str, attribute: str) -> bool:
    """Whether a fact states the state `attribute` names (rather than its stop)."""
    slot = state_slot(content, subject, attribute)
    return slot is not None and slot.value == "yes"


def _state_stated(content: str, subject: str, states: Sequence[tuple[str, str]]) -> str | None:
    """The first of the stopped `states` ((subject, attribute), sorted) a fact of `subject` states."""
    return next((a for s, a in states if s == subject and _states(content, s, a)), None)


def supersede_corrected(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    corrections: Sequence[tuple[Sequence[uuid.UUID], dict[uuid.UUID, str], datetime]],
    actor: str,
) -> int:
    """After an ingest wrote what corrections say ("Sorry, I meant Tuesday."): close the facts read
    from the messages they correct, and those messages' turns. Each correction is (the turns it
    replaces, the facts read from it by id and content, when it was said); a replaced memory's
    successor is the corrected fact that shares the most words with it. A corrected fact was never
    true: its validity ends where it began, so no search returns it (`consolidation.never_valid`),
    while its history keeps what was said and when. A corrected turn was said, and held until the
    correction: for a question about now it ranks below what the correction says (it had ranked
    above, "My team dinner is on Monday." over "… on 19 March")."""
    facts, turns_said = [], []
    for turns, corrected, said_at in corrections:
        if not corrected:
            continue
        for old in stated_only_by(session, tenant_id, turns):
            if old.status == "active" and old.id not in corrected:
                valid_to = old.valid_from or old.event_at
                facts.append(Supersede(old.id, _closest_fact(old.content, corrected), valid_to))
        said = select(Memory.id, Memory.content).where(
            Memory.id.in_(list(turns)), Memory.tenant_id == tenant_id, Memory.status == "active"
        )
        for turn_id, content in session.execute(said).all():
            turns_said.append(Supersede(turn_id, _closest_fact(content, corrected), said_at))
    apply_supersessions(session, tenant_id, user_id, turns_said, actor)
    return apply_supersessions(session, tenant_id, user_id, facts, actor)  # the facts it closed


def _closest_fact(content: str, facts: dict[uuid.UUID, str]) -> uuid.UUID:
    """Of `facts` (id → content), the one sharing the most words with `content` (ties by id)."""
    words = set(content.lower().split())
    return max(facts, key=lambda i: (len(words & set(facts[i].lower().split())), str(i)))


def close_cancelled_plans(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    cancellations: Sequence[tuple[uuid.UUID, str, frozenset[str], datetime]],
    actor: str,
) -> int:
    """After an ingest wrote facts that call a plan off ((fact id, subject, the words the plan
    names, when it was said): `consolidation.cancelled_plan`): close the subject's plans stated
    before it that name those words; each ends when it was called off. A plan's time is when it
    was to happen, so one called off before then never held: it ends before it began, and no
    search returns it (`consolidation.never_valid`)."""
    plans = []
    for fact_id, subject, words, said_at in cancellations:
        stated = _said_of(
            session,
            tenant_id,
            user_id,
            subject,
            Memory.kind == "plan",
            Memory.event_at <= said_at,
            Memory.id != fact_id,
        )
        for plan_id, content in stated:
            if names_plan(content, words, subject):
                plans.append(Supersede(old_id=plan_id, new_id=fact_id, valid_to=said_at))
    return apply_supersessions(session, tenant_id, user_id, plans, actor)


# -- use statistics -----------------------------------------------------------------------------

# Rows a consolidation run holds are skipped (SKIP LOCKED), never waited for: their counts stay
# pending for the next flush, and the writer can neither block a run nor deadlock with one.
_RECORD_USES = text(
    """
    WITH uses AS (
        SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:counts AS int[])) AS u(id, n)
    ), locked AS (
        SELECT m.id FROM memories m JOIN uses USING (id) ORDER BY m.id FOR UPDATE OF m SKIP LOCKED
    )
    UPDATE memories m SET access_count = m.access_count + uses.n,
           last_accessed_at = greatest(m.last_accessed_at, CAST(:at AS timestamptz))
    FROM uses JOIN locked USING (id) WHERE m.id = uses.id
    RETURNING m.id
    """
)


def record_uses(session: Session, counts: dict[uuid.UUID, int], at: datetime) -> set[uuid.UUID]:
    """Add search uses to `access_count` and move `last_accessed_at` to `at`; returns the ids
    written (a memory since deleted is dropped, one locked by a run is left out)."""
    ids = sorted(counts)
    written = session.execute(
        _RECORD_USES, {"ids": ids, "counts": [counts[i] for i in ids], "at": at}
    ).scalars()
    done = set(written)
    # Deleted memories will never be written: report them done so their counts are dropped.
    present = set(session.execute(select(Memory.id).where(Memory.id.in_(ids))).scalars())
    return done | (set(ids) - present)


# -- successors that went away ------------------------------------------------------------------

# Superseded rows of a user whose successor is one of :gone, or (:gone is NULL) no longer a live
# memory of the user (deleted, purged, archived). A corrected fact (its validity ends where it
# began) stays closed, unless what goes is the correction itself (`corrected`); a plan called off
# before its time (it ends before it began) holds again.
_ORPHANED = text(
    """
    SELECT m.id FROM memories m
    WHERE m.tenant_id = :t AND m.user_id = :u AND m.status = 'superseded'
      AND (CAST(:corrected AS boolean) OR m.valid_to IS NULL OR m.valid_from IS NULL
           OR m.valid_to <> m.valid_from)
      AND CASE WHEN CAST(:gone AS uuid[]) IS NULL THEN NOT EXISTS (
                 SELECT 1 FROM memories s WHERE s.id = m.superseded_by AND s.tenant_id = :t
                   AND s.user_id = :u AND s.status IN ('active', 'superseded'))
               ELSE m.superseded_by = ANY(CAST(:gone AS uuid[])) END
    ORDER BY m.id
    FOR UPDATE OF m
    """
)


def reopen_predecessors(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    actor: str,
    gone: Sequence[uuid.UUID] | None = None,
    run_id: uuid.UUID | None = None,
    *,
    corrected: bool = False,
) -> int:
    """After the successors `gone` were deleted, purged or archived (None: look for any such), the
    memories they closed hold again: each is closed by the next different value that is still there,
    or, if none, re-opened (`status` active, `valid_to` cleared; a `reopen` history event). A turn
    closed with its fact follows that fact. `corrected`: what went is what a message said, so the
    facts its corrections closed hold again too ("Sorry, I meant Tuesday." deleted: Monday again).
    Call under the user's lock, in the removing transaction.
    Returns how many memories were re-opened."""
    params = {"t": tenant_id, "u": user_id, "gone": gone, "corrected": corrected}
    orphans = list(session.execute(_ORPHANED, params).scalars())
    if not orphans:
        return 0
    rows = list(session.execute(select(Memory).where(Memory.id.in_(orphans))).scalars())
    keys = supersession_keys((r.subject or "", r.attribute) for r in rows if r.attribute)
    plans: dict[uuid.UUID, Supersede] = {}
    if keys:
        facts = _slot_facts(session, tenant_id, user_id, keys)
        facts = [f for f in facts if (f.subject, f.attribute) in keys]
        plans = {p.old_id: p for p in plan_supersessions(facts)}
    # A turn follows the fact it was closed with (the fact's new successor, or open again), and a
    # passage its turn.
    fact_of_turn = dict(
        session.execute(
            select(MemorySource.turn_id, MemorySource.memory_id).where(
                MemorySource.turn_id.in_([r.id for r in rows if r.kind == "turn"]),
                MemorySource.memory_id.in_(list(plans)),
            )
        ).all()
    )
    passages = [r.id for r in rows if r.kind == "passage"]
    for passage, turn in session.execute(
        select(MemorySource.memory_id, MemorySource.turn_id).where(MemorySource.memory_id.in_(passages))
    ).all():
        if turn in fact_of_turn:
            fact_of_turn[passage] = fact_of_turn[turn]
    events: list[dict[str, Any]] = []
    reopened = 0
    for row in rows:
        plan = plans.get(fact_of_turn.get(row.id, row.id))
        before = _snapshot(row)
        if plan is not None:
            row.superseded_by, row.valid_to, op = plan.new_id, plan.valid_to, "supersede"
        else:
            row.status, row.superseded_by, row.valid_to, op = "active", None, None, "reopen"
            reopened += 1
        row.updated_at = func.now()
        session.flush()
        events.append(_event(tenant_id, user_id, row.id, op, actor, run_id, before, _snapshot(row)))
    session.execute(insert(HistoryEvent), events)
    return reopened


# -- an LLM's operations on stored memories ------------------------------------------------------

_NEAR = text(
    """
    SELECT m.id, m.content FROM memories m
    WHERE m.tenant_id = :t AND m.user_id = :u AND m.type = 'semantic' AND m.status = 'active'
      AND m.kind IN ('fact', 'preference', 'plan', 'event') AND m.id <> ALL(CAST(:new AS uuid[]))
    ORDER BY m.embedding <=> (SELECT embedding FROM memories WHERE id = :f)
    LIMIT :k
    """
)


def new_and_near(
    session: Session, tenant_id: uuid.UUID, user_id: str, memory_ids: Sequence[uuid.UUID], k: int = 5
) -> tuple[list[tuple[uuid.UUID, str]], list[tuple[uuid.UUID, str]]]:
    """The semantic memories among `memory_ids` (an ingest's, in order), and the user's other active
    ones nearest each in meaning (`k` each, first come first listed): what an LLM compares."""
    rows = {
        r.id: r.content
        for r in session.execute(
            select(Memory.id, Memory.content).where(
                Memory.id.in_(list(memory_ids)),
                Memory.tenant_id == tenant_id,
                Memory.type == "semantic",
                Memory.status == "active",
                Memory.kind.in_(SEMANTIC_KINDS),
            )
        ).all()
    }
    new = [(i, rows[i]) for i in dict.fromkeys(memory_ids) if i in rows]
    near: dict[uuid.UUID, str] = {}
    for memory_id, _ in new:
        for r in session.execute(
            _NEAR, {"t": tenant_id, "u": user_id, "new": [i for i, _ in new], "f": memory_id, "k": k}
        ).all():
            near.setdefault(r.id, r.content)
    # In a stable order (by content), so the model sees the same list for the same memories.
    return new, sorted(near.items(), key=lambda item: (item[1], str(item[0])))


def apply_memory_operations(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    new_ids: Sequence[uuid.UUID],
    known_ids: Sequence[uuid.UUID],
    operations: Sequence[Any],
    rewrites: dict[int, tuple[str, Any]],
    actor: str,
) -> dict[str, int]:
    """Apply an LLM's proposals (`memsvc.extraction.llm.MemoryOperation`, indices into `new_ids` and
    `known_ids`) in the ingest's transaction, each as a history event by `actor`: NOOP merges the new
    fact into the stored one (its provenance joins; it is archived as merged); UPDATE rewrites the
    stored memory (content hash and vector in `rewrites`, by operation index) and merges the new
    fact into it; DELETE deletes the stored memory, and what it superseded holds again; ADD keeps
    the new fact."""
    counts = {"ADD": 0, "UPDATE": 0, "DELETE": 0, "NOOP": 0}
    now = datetime.now(UTC)
    deleted: set[uuid.UUID] = set()
    for index, operation in enumerate(operations):
        new_id = new_ids[operation.fact]
        target = known_ids[operation.memory] if operation.memory is not None else None
        if operation.op == "ADD" or target is None or target in deleted:
            counts["ADD"] += 1
            continue
        memory = session.execute(
            select(Memory)
            .where(Memory.id == target, Memory.tenant_id == tenant_id, Memory.user_id == user_id)
            .with_for_update()
        ).scalar_one_or_none()
        if memory is None or memory.status != "active":
            counts["ADD"] += 1
            continue
        why = {"reason": operation.reason, "fact": str(new_id)}
        if operation.op == "DELETE":
            session.execute(
                insert(HistoryEvent),
                [_event(tenant_id, user_id, memory.id, "delete", actor, None, _snapshot(memory), why)],
            )
            session.delete(memory)
            session.flush()
            deleted.add(target)
            reopen_predecessors(session, tenant_id, user_id, actor, [target])
        else:
            if operation.op == "UPDATE":
                before = _snapshot(memory)
                memory.content = operation.content
                memory.content_hash, memory.embedding = rewrites[index]
                memory.updated_at = func.now()
                session.flush()
                session.execute(
                    insert(HistoryEvent),
                    [
                        _event(
                            tenant_id,
                            user_id,
                            memory.id,
                            "update",
                            actor,
                            None,
                            before,
                            _snapshot(memory) | why,
                        )
                    ],
                )
            _apply_merge(session, tenant_id, user_id, memory.id, [new_id], actor, None, now)
        counts[operation.op] += 1
    return counts


# -- a run over one user ------------------------------------------------------------------------


@dataclass(slots=True)
class UserReport:
    """What a run did (or, dry, would do) to one user."""

    tenant_id: str
    user_id: str
    memories_before: int = 0
    memories_after: int = 0
    attributes: int = 0
    superseded: int = 0
    reopened: int = 0
    merged: int = 0
    entities_merged: int = 0
    relations_folded: int = 0
    summarised: int = 0
    archived: int = 0
    purged: int = 0
    skipped: str | None = None  # why the user was not consolidated (another run holds it)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_ROW_COLUMNS = (
    Memory.id,
    Memory.type,
    Memory.kind,
    Memory.subject,
    Memory.attribute,
    Memory.speaker,
    Memory.session_id,
    Memory.position,
    Memory.content,
    Memory.content_hash,
    Memory.status,
    Memory.pinned,
    Memory.importance,
    Memory.access_count,
    Memory.last_accessed_at,
    Memory.event_at,
    Memory.valid_from,
    Memory.valid_to,
    Memory.superseded_by,
    Memory.archived_at,
    Memory.expires_at,
    Memory.metadata_,
)


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _expiry(row: Any) -> datetime | None:
    if row.expires_at is not None:
        return row.expires_at  # type: ignore[no-any-return]
    raw = (row.metadata_ or {}).get("expires_at")
    if isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            return None
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def _apply_merges(
    database: Database,
    tenant_id: uuid.UUID,
    user_id: str,
    merges: Sequence[Merge],
    batch_size: int,
    apply: Callable[[Session, Merge], int | None],
) -> int:
    """Apply merges under the user's lock, a quarter of `batch_size` per transaction (a merge
    touches several rows); returns the sum of what `apply` returned."""
    done = 0
    for batch in _batches(merges, max(1, batch_size // 4)):
        with database.session() as session:
            lock_user(session, tenant_id, user_id)
            for merge in batch:
                done += apply(session, merge) or 0
    return done


def consolidate_user(
    database: Database,
    tenant_id: uuid.UUID,
    user_id: str,
    config: ConsolidationConfig,
    *,
    embedder: Embedder | None,
    actor: str,
    run_id: uuid.UUID,
    now: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> UserReport:
    """Supersede, merge, summarise and forget one user's memories: planned from one read of the
    rows, applied in transactions of at most `config.batch_size` changes."""
    now = now or datetime.now(UTC)
    report = UserReport(str(tenant_id), user_id)
    with database.session() as session:
        rows = list(
            session.execute(
                select(*_ROW_COLUMNS).where(Memory.tenant_id == tenant_id, Memory.user_id == user_id)
            ).all()
        )
        # The message each passage is part of (None: deleted before its passages followed it).
        turn_of = dict(
            session.execute(
                select(MemorySource.memory_id, MemorySource.turn_id)
                .join(Memory, Memory.id == MemorySource.memory_id)
                .where(Memory.tenant_id == tenant_id, Memory.user_id == user_id, Memory.kind == "passage")
            ).all()
        )
    report.memories_before = sum(1 for r in rows if r.status != "archived")
    by_id = {r.id: r for r in rows}

    # 1. Attributes of facts stored before supersession existed (or by an extractor that names none).
    backfill = []
    for r in rows:
        if r.type == "semantic" and r.attribute is None and r.status != "archived":
            slot = fact_slot(r.content, r.subject)
            if slot is not None:
                backfill.append((r.id, slot.attribute))
    # ... and the states they stop, on the facts that state them (as `tag_stopped_states` at ingest).
    attribute_of = {r.id: r.attribute for r in rows} | dict(backfill)
    stops = sorted({(r.subject, a) for r in rows if (a := attribute_of[r.id]) and a.startswith(STOPPED)})
    for r in rows:
        if attribute_of[r.id] is None and r.status == "active" and r.kind in _STATE_KINDS:  # semantic kinds
            attribute = _state_stated(r.content, r.subject or "", stops)
            if attribute is not None:
                backfill.append((r.id, attribute))
                attribute_of[r.id] = attribute
    report.attributes = len(backfill)
    if not dry_run:
        for batch in _batches(backfill, 1000):
            with database.session() as session:
                lock_user(session, tenant_id, user_id)
                for memory_id, attribute in batch:
                    session.execute(
                        update(Memory)
                        .where(Memory.id == memory_id, Memory.attribute.is_(None))
                        .values(attribute=attribute)
                    )

    # 2. Supersession, over every attribute of the user.
    slot_facts = []
    for r in rows:
        attribute = attribute_of.get(r.id)
        if attribute and r.status in ("active", "superseded") and not never_valid(r.valid_from, r.valid_to):
            slot = stored_slot(r.content, r.subject or "", attribute)
            if slot is not None:
                slot_facts.append(
                    SlotFact(
                        r.id,
                        r.subject or "",
                        attribute,
                        slot.value,
                        r.valid_from or r.event_at,
                        r.event_at,
                        r.status,
                        r.superseded_by,
                        r.valid_to,
                        r.content,
                    )
                )
    supersessions = plan_supersessions(slot_facts)
    report.superseded = len(supersessions)
    report.examples.extend(
        {"op": "supersede", "old": by_id[p.old_id].content, "new": by_id[p.new_id].content}
        for p in supersessions[:5]
    )
    if not dry_run:
        for batch in _batches(supersessions, config.batch_size):
            with database.session() as session:
                lock_user(session, tenant_id, user_id)
                apply_supersessions(session, tenant_id, user_id, batch, actor, run_id)
        if progress:
            progress(len(supersessions))
    # Facts closed by a successor that is gone (deleted, purged, archived) hold again.
    live = {r.id for r in rows if r.status in ("active", "superseded")}
    redirected = {p.old_id for p in supersessions}
    orphans = [
        r.id
        for r in rows
        if r.status == "superseded" and r.superseded_by not in live and r.id not in redirected
    ]
    report.reopened = len(orphans)
    if orphans and not dry_run:
        with database.session() as session:
            lock_user(session, tenant_id, user_id)
            report.reopened = reopen_predecessors(session, tenant_id, user_id, actor, None, run_id)

    # 3. Near-duplicates; a fact with an attribute only with facts of its value (supersession
    # orders the values), and not at all when it no longer reads as one.
    attributed = attribute_of.get
    mergeable = [
        (
            r,
            merge_row(
                r.id,
                r.kind,
                r.subject,
                r.content,
                r.content_hash,
                r.valid_from,
                r.event_at,
                attributed(r.id),
                apart=[uuid.UUID(i) for i in (r.metadata_ or {}).get(KEPT_APART, [])],
            ),
        )
        for r in rows
        if r.type == "semantic" and r.kind in SEMANTIC_KINDS and r.status == "active"
    ]
    mergeable = [(r, m) for r, m in mergeable if m.value is not None or attributed(r.id) is None]
    merges = []
    if mergeable:
        with database.session() as session:
            vector_rows = session.execute(
                select(Memory.id, cast(Memory.embedding, ARRAY(REAL))).where(
                    Memory.id.in_([r.id for r, _ in mergeable])
                )
            ).all()
        vector_of = {i: v for i, v in vector_rows}
        mergeable = [(r, m) for r, m in mergeable if vector_of.get(r.id) is not None]
        vectors = np.asarray([vector_of[r.id] for r, _ in mergeable], dtype=np.float32).reshape(
            len(mergeable), -1
        )
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        merges = plan_merges([m for _, m in mergeable], vectors, config.merge_cosine)
    report.merged = sum(len(m.duplicate_ids) for m in merges)
    report.examples.extend(
        {
            "op": "merge",
            "into": by_id[m.survivor_id].content,
            "merged": [by_id[d].content for d in m.duplicate_ids][:3],
        }
        for m in merges[:5]
    )
    if not dry_run:
        _apply_merges(
            database,
            tenant_id,
            user_id,
            merges,
            config.batch_size,
            lambda session, m: _apply_merge(
                session, tenant_id, user_id, m.survivor_id, m.duplicate_ids, actor, run_id, now
            ),
        )
        if progress:
            progress(len(merges))

    # 3b. Near-duplicate entities, relations re-pointed to the survivor and folded.
    entity_merges = plan_user_entity_merges(database, tenant_id, user_id, config.entity_merge_cosine)
    report.entities_merged = sum(len(m.duplicate_ids) for m in entity_merges)
    report.examples.extend(
        {"op": "merge_entity", "into": str(m.survivor_id), "merged": [str(d) for d in m.duplicate_ids][:3]}
        for m in entity_merges[:3]
    )
    if not dry_run:
        report.relations_folded = _apply_merges(
            database,
            tenant_id,
            user_id,
            entity_merges,
            config.batch_size,
            lambda session, m: _apply_entity_merge(
                session, tenant_id, user_id, m.survivor_id, m.duplicate_ids, actor, run_id
            ),
        )
        if progress:
            progress(len(entity_merges))

    # The state after merging, as forgetting and summaries see it (also in a dry run).
    merged_away = {d for m in merges for d in m.duplicate_ids}
    survivor_stats: dict[uuid.UUID, dict[str, Any]] = {}
    for m in merges:
        members = [by_id[m.survivor_id], *(by_id[d] for d in m.duplicate_ids)]
        survivor_stats[m.survivor_id] = merged_fields([r._asdict() for r in members])
    superseded_now = {p.old_id for p in supersessions}

    # 4. Summaries of older events.
    summaries = []
    if config.summaries and embedder is not None:
        events = [
            EventRow(r.id, r.subject or "", r.content, r.valid_from or r.event_at)
            for r in rows
            if r.kind == "event" and r.status == "active" and r.id not in merged_away and r.subject
        ]
        older_than = max((r.event_at for r in rows), default=now) - timedelta(
            days=config.summary_min_age_days
        )
        summaries = plan_summaries(events, older_than=older_than)
        existing = {r.id for r in rows}
        summaries = [
            s for s in summaries if _summary_id(tenant_id, user_id, s.key, s.content) not in existing
        ]
    report.summarised = len(summaries)
    if not dry_run and summaries and embedder is not None:
        vectors_s = embedder.embed([s.content for s in summaries])
        for batch_items in _batches(list(zip(summaries, vectors_s, strict=True)), config.batch_size):
            with database.session() as session:
                lock_user(session, tenant_id, user_id)
                for summary, vector in batch_items:
                    _insert_summary(session, tenant_id, user_id, summary, vector, actor, run_id)

    # 5. Forgetting, on the user's own clock.
    user_clock = max((r.event_at for r in rows if r.kind == "turn"), default=None) or max(
        (r.event_at for r in rows), default=now
    )
    speakers = {r.speaker for r in rows if r.speaker}
    line_at = {(r.session_id, r.position): r.content for r in rows if r.kind == "turn"}
    exchanges = {
        r.id
        for r in rows
        if r.kind == "turn"
        and r.position is not None
        and in_exchange(
            r.content,
            line_at.get((r.session_id, r.position - 1)),
            (r.session_id, r.position + 1) in line_at,
        )
    }
    retention_rows = []
    for r in rows:
        if r.id in merged_away:
            continue
        stats = survivor_stats.get(r.id, {})
        last_used = stats.get("last_accessed_at") or r.last_accessed_at
        retention_rows.append(
            RetentionRow(
                r.id,
                r.kind,
                r.content,
                float(stats.get("importance", r.importance)),
                int(stats.get("access_count", r.access_count)),
                max(last_used, r.event_at) if last_used else r.event_at,
                "superseded" if r.id in superseded_now else r.status,
                r.pinned,
                attribute_of.get(r.id),
                r.archived_at,
                _expiry(r),
                r.id in exchanges,
                turn_of.get(r.id),
            )
        )
    forget = plan_forgetting(
        retention_rows, user_clock=user_clock, now=now, config=config.retention, speakers=speakers
    )
    report.archived, report.purged = len(forget.archive), len(forget.purge)
    report.examples.extend(
        {"op": "archive", "content": by_id[i].content[:120], "why": why} for i, why in forget.archive[:5]
    )
    if not dry_run:
        for archive_batch in _batches(forget.archive, config.batch_size):
            with database.session() as session:
                lock_user(session, tenant_id, user_id)
                _apply_archive(session, tenant_id, user_id, archive_batch, actor, run_id, now)
        cutoff = now - timedelta(days=config.retention.purge_after_days)
        for purge_batch in _batches(forget.purge, config.batch_size):
            with database.session() as session:
                lock_user(session, tenant_id, user_id)
                _apply_purge(session, tenant_id, user_id, purge_batch, actor, run_id, cutoff)
        if progress:
            progress(len(forget.archive) + len(forget.purge))
    report.memories_after = report.memories_before - report.merged - report.archived + report.summarised
    return report


# One statement per batch: an UPDATE per row costs a round trip and, as the row moves, an entry in
# every index (the vector index too), which made a run of 3k memories take 48 s instead of a few.
_MOVE_OUT = """
WITH old AS (
    SELECT id, content, status, valid_from, valid_to, superseded_by FROM memories
    WHERE id = ANY(CAST(:ids AS uuid[])) AND tenant_id = :t AND user_id = :u AND status = 'active'
      AND (NOT pinned OR id = ANY(CAST(:unpin AS uuid[])))
    FOR UPDATE
)
UPDATE memories m SET status = 'archived', archived_at = :now, updated_at = now(),
       superseded_by = coalesce(CAST(:into AS uuid), m.superseded_by),
       metadata = CASE WHEN CAST(:into AS uuid) IS NULL THEN m.metadata
                       ELSE m.metadata || jsonb_build_object('merged_into', CAST(:into AS text)) END
FROM old WHERE m.id = old.id
RETURNING m.id, old.content, old.status, old.valid_from, old.valid_to, old.superseded_by
"""


def _move_out(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    ids: Sequence[uuid.UUID],
    now: datetime,
    *,
    into: uuid.UUID | None = None,
    unpin: Sequence[uuid.UUID] = (),
) -> list[Any]:
    """Archive active rows (pinned ones only if in `unpin`); returns their state before."""
    return list(
        session.execute(
            text(_MOVE_OUT),
            {
                "ids": list(ids),
                "t": tenant_id,
                "u": user_id,
                "unpin": list(unpin),
                "now": now,
                "into": str(into) if into else None,
            },
        ).all()
    )


def _apply_merge(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    survivor_id: uuid.UUID,
    duplicate_ids: Sequence[uuid.UUID],
    actor: str,
    run_id: uuid.UUID | None,
    now: datetime,
) -> None:
    survivor = session.execute(
        select(Memory)
        .where(
            Memory.id == survivor_id,
            Memory.tenant_id == tenant_id,
            Memory.user_id == user_id,
            Memory.status == "active",
        )
        .with_for_update()
    ).scalar_one_or_none()
    if survivor is None:
        return
    stats = {
        r.id: r
        for r in session.execute(
            select(
                Memory.id, Memory.pinned, Memory.access_count, Memory.last_accessed_at, Memory.importance
            ).where(Memory.id.in_(list(duplicate_ids)))
        ).all()
    }
    # Pinned duplicates merge too: the survivor takes over their pin.
    moved = _move_out(session, tenant_id, user_id, duplicate_ids, now, into=survivor.id, unpin=duplicate_ids)
    if not moved:
        return
    dup_ids = [m.id for m in moved]
    before = {**_snapshot(survivor), "access_count": survivor.access_count}
    fields = merged_fields(
        [
            {
                "valid_from": survivor.valid_from,
                "access_count": survivor.access_count,
                "last_accessed_at": survivor.last_accessed_at,
                "importance": survivor.importance,
            },
            *(
                {
                    "valid_from": m.valid_from,
                    "access_count": stats[m.id].access_count,
                    "last_accessed_at": stats[m.id].last_accessed_at,
                    "importance": stats[m.id].importance,
                }
                for m in moved
            ),
        ]
    )
    aliases = list((survivor.metadata_ or {}).get("aliases", []))
    aliases += [m.content for m in moved if m.content != survivor.content and m.content not in aliases]
    survivor.valid_from = fields["valid_from"]
    survivor.access_count = fields["access_count"]
    survivor.last_accessed_at = fields["last_accessed_at"]
    survivor.importance = fields["importance"]
    survivor.pinned = survivor.pinned or any(stats[m.id].pinned for m in moved)
    if aliases:
        survivor.metadata_ = {**(survivor.metadata_ or {}), "aliases": aliases}
    survivor.updated_at = func.now()
    # Provenance, graph mentions and relations move to the survivor.
    session.execute(
        insert(MemorySource)
        .from_select(
            ["memory_id", "message_id", "turn_id", "tenant_id", "user_id"],
            select(
                text(f"'{survivor.id}'::uuid"),
                MemorySource.message_id,
                MemorySource.turn_id,
                MemorySource.tenant_id,
                MemorySource.user_id,
            ).where(MemorySource.memory_id.in_(dup_ids)),
        )
        .on_conflict_do_nothing()
    )
    session.execute(
        insert(EntityMention)
        .from_select(
            ["entity_id", "memory_id", "tenant_id", "user_id"],
            select(
                EntityMention.entity_id,
                text(f"'{survivor.id}'::uuid"),
                EntityMention.tenant_id,
                EntityMention.user_id,
            ).where(EntityMention.memory_id.in_(dup_ids)),
        )
        .on_conflict_do_nothing()
    )
    session.execute(update(Relation).where(Relation.memory_id.in_(dup_ids)).values(memory_id=survivor.id))
    session.flush()
    merged = [str(d) for d in dup_ids]
    events = [
        _event(
            tenant_id,
            user_id,
            survivor.id,
            "merge",
            actor,
            run_id,
            before,
            {**_snapshot(survivor), "access_count": survivor.access_count, "merged": merged},
        )
    ]
    for m in moved:
        after = {**_snapshot(m), "status": "archived", "superseded_by": str(survivor.id)}
        events.append(
            _event(
                tenant_id,
                user_id,
                m.id,
                "merge",
                actor,
                run_id,
                _snapshot(m),
                after | {"merged_into": str(survivor.id)},
            )
        )
    session.execute(insert(HistoryEvent), events)
    touch_feed(session, tenant_id, [survivor.id])


def plan_user_entity_merges(
    database: Database, tenant_id: uuid.UUID, user_id: str, threshold: float
) -> list[Merge]:
    """Which of the user's entities are one (`memsvc.consolidation.plan_entity_merges`)."""
    with database.session() as session:
        rows = session.execute(
            select(
                Entity.id,
                Entity.name,
                Entity.entity_type,
                Entity.created_at,
                Entity.aliases,
                cast(Entity.embedding, ARRAY(REAL)),
            )
            .where(Entity.tenant_id == tenant_id, Entity.user_id == user_id)
            .order_by(Entity.id)
        ).all()
    if not rows:
        return []
    dim = max((len(r[5]) for r in rows if r[5] is not None), default=1)
    vectors = np.asarray([r[5] if r[5] is not None else [0.0] * dim for r in rows], dtype=np.float32).reshape(
        len(rows), dim
    )
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    entities = [EntityRow(r.id, r.name, r.entity_type, r.created_at, tuple(r.aliases or ())) for r in rows]
    return plan_entity_merges(entities, vectors, threshold)


# Relations of the survivor that say the same thing (same ends, predicate and sentence) fold into
# the earliest, with the union of their sources and the earliest validity; edges from the entity to
# itself (two names of one thing related to each other) go.
_FOLD_RELATIONS = text(
    """
    WITH mine AS (
        SELECT id, subject_id, predicate, object_id, lower(fact) AS fact, created_at, valid_from,
               memory_id, source_message_ids,
               first_value(id) OVER (PARTITION BY subject_id, predicate, object_id, lower(fact)
                                     ORDER BY created_at, id) AS keeper
        FROM relations
        WHERE tenant_id = :t AND user_id = :u AND (subject_id = :e OR object_id = :e)
    ), merged AS (
        SELECT keeper,
               ARRAY(SELECT DISTINCT s FROM mine m2, unnest(m2.source_message_ids) s
                     WHERE m2.keeper = mine.keeper ORDER BY s) AS sources,
               min(valid_from) AS valid_from,
               (array_agg(memory_id ORDER BY created_at, id) FILTER (WHERE memory_id IS NOT NULL))[1]
                   AS memory_id
        FROM mine WHERE NOT (subject_id = :e AND object_id = :e) GROUP BY keeper HAVING count(*) > 1
    ), kept AS (
        UPDATE relations r SET source_message_ids = merged.sources, valid_from = merged.valid_from,
               memory_id = coalesce(r.memory_id, merged.memory_id)
        FROM merged WHERE r.id = merged.keeper RETURNING r.id
    )
    DELETE FROM relations r USING mine
    WHERE r.id = mine.id AND (mine.id <> mine.keeper OR (r.subject_id = :e AND r.object_id = :e))
    RETURNING r.id, r.subject_id, r.predicate, r.object_id, r.fact
    """
)


def _apply_entity_merge(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    survivor_id: uuid.UUID,
    duplicate_ids: Sequence[uuid.UUID],
    actor: str,
    run_id: uuid.UUID,
) -> int:
    """One entity merge: relations and mentions move to the survivor, which takes the others' names
    as aliases and their mention counts; relations that now say the same thing fold. Returns how
    many relations were folded away."""
    found = {
        e.id: e
        for e in session.execute(
            select(Entity)
            .where(
                Entity.id.in_([survivor_id, *duplicate_ids]),
                Entity.tenant_id == tenant_id,
                Entity.user_id == user_id,
            )
            .order_by(Entity.id)
            .with_for_update()
        ).scalars()
    }
    survivor = found.get(survivor_id)
    duplicates = [found[d] for d in duplicate_ids if d in found]
    if survivor is None or not duplicates:
        return 0  # changed since the plan: the next run decides again
    dup_ids = [d.id for d in duplicates]

    def state(entity: Entity) -> dict[str, Any]:
        return {
            "entity": entity.name,
            "entity_type": entity.entity_type,
            "aliases": list(entity.aliases or []),
            "mention_count": entity.mention_count,
        }

    before = state(survivor)
    aliases = list(survivor.aliases or [])
    for duplicate in duplicates:
        for name in (duplicate.name, *(duplicate.aliases or [])):
            if name != survivor.name and name not in aliases:
                aliases.append(name)
    survivor.aliases = aliases
    if any(d.entity_type == "person" for d in duplicates):
        survivor.entity_type = "person"  # a full name merged with the person it names
    froms = [e.valid_from for e in (survivor, *duplicates) if e.valid_from is not None]
    survivor.valid_from = min(froms) if froms else None
    survivor.updated_at = func.now()
    session.execute(update(Relation).where(Relation.subject_id.in_(dup_ids)).values(subject_id=survivor_id))
    session.execute(update(Relation).where(Relation.object_id.in_(dup_ids)).values(object_id=survivor_id))
    session.execute(
        insert(EntityMention)
        .from_select(
            ["entity_id", "memory_id", "tenant_id", "user_id"],
            select(
                text(f"'{survivor_id}'::uuid"),
                EntityMention.memory_id,
                EntityMention.tenant_id,
                EntityMention.user_id,
            ).where(EntityMention.entity_id.in_(dup_ids)),
        )
        .on_conflict_do_nothing()
    )
    session.flush()
    folded = session.execute(_FOLD_RELATIONS, {"t": tenant_id, "u": user_id, "e": survivor_id}).all()
    for duplicate in duplicates:
        session.delete(duplicate)  # its own mentions go with it (cascade); the survivor has copies
    session.flush()
    recount_mentions(session, [survivor_id])  # a message naming both names is one mention
    mentioning = list(
        session.execute(
            select(EntityMention.memory_id).where(EntityMention.entity_id == survivor_id)
        ).scalars()
    )
    events = [
        _event(
            tenant_id,
            user_id,
            survivor_id,
            "merge_entity",
            actor,
            run_id,
            before,
            {
                **state(survivor),
                "merged": [str(d) for d in dup_ids],
                "relations_folded": [
                    {"id": str(r.id), "predicate": r.predicate, "fact": r.fact} for r in folded
                ],
            },
        ),
        *(
            _event(
                tenant_id,
                user_id,
                d.id,
                "merge_entity",
                actor,
                run_id,
                state(d),
                {"merged_into": str(survivor_id), "entity": survivor.name},
            )
            for d in duplicates
        ),
    ]
    session.execute(insert(HistoryEvent), events)
    # Cached corpora hold each memory's entities and the graph: the feed makes them read both again.
    touch_feed(session, tenant_id, mentioning)
    return len(folded)


# Active passages (among :ids, or of the turns :turns) whose message is archived or gone: a passage
# is archived with its message and never alone, so none is searchable without it.
_PASSAGES_TO_ARCHIVE = text(
    """
    SELECT p.id FROM memories p JOIN memory_sources s ON s.memory_id = p.id
    LEFT JOIN memories t ON t.id = s.turn_id
    WHERE p.tenant_id = :t AND p.user_id = :u AND p.kind = 'passage' AND p.status = 'active'
      AND (p.id = ANY(CAST(:ids AS uuid[])) OR s.turn_id = ANY(CAST(:turns AS uuid[])))
      AND (t.id IS NULL OR t.status = 'archived')
    ORDER BY p.id
    """
)


def _apply_archive(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    items: Sequence[tuple[uuid.UUID, str]],
    actor: str,
    run_id: uuid.UUID,
    now: datetime,
) -> None:
    why = dict(items)
    expired = [i for i, reason in items if reason == "expired"]
    # Messages first; then the passages of those archived (now or before) or gone, pinned or not.
    planned_parts = set(
        session.execute(select(Memory.id).where(Memory.id.in_(list(why)), Memory.kind == "passage")).scalars()
    )
    moved = _move_out(
        session, tenant_id, user_id, [i for i in why if i not in planned_parts], now, unpin=expired
    )
    follow = list(
        session.execute(
            _PASSAGES_TO_ARCHIVE,
            {"t": tenant_id, "u": user_id, "ids": sorted(planned_parts), "turns": [m.id for m in moved]},
        ).scalars()
    )
    parts = _move_out(session, tenant_id, user_id, follow, now, unpin=follow)
    events = [
        _event(
            tenant_id,
            user_id,
            m.id,
            "archive",
            actor,
            run_id,
            _snapshot(m),
            {**_snapshot(m), "status": "archived", "why": why.get(m.id, "its message is archived")},
        )
        for m in (*moved, *parts)
    ]
    if events:
        session.execute(insert(HistoryEvent), events)
    if moved:
        # A forgotten successor (a new value whose TTL passed) no longer closes what it replaced.
        reopen_predecessors(session, tenant_id, user_id, actor, [m.id for m in moved], run_id)


def _apply_purge(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    ids: Sequence[uuid.UUID],
    actor: str,
    run_id: uuid.UUID,
    cutoff: datetime,
) -> None:
    """Delete archived memories for good: the row, its vector (the change feed tells the GPU
    index), provenance and mentions (cascade), the relations it stated and the entities only it
    named (`store.delete_rows`). The history stays."""
    rows = list(
        session.execute(
            select(Memory)
            .where(
                Memory.id.in_(list(ids)),
                Memory.tenant_id == tenant_id,
                Memory.user_id == user_id,
                Memory.status == "archived",
                Memory.archived_at <= cutoff,
            )
            .with_for_update()
        ).scalars()
    )
    if not rows:
        return
    # A purged message's passages go with it, whatever their state (read before the message goes:
    # its provenance link would be cleared).
    purged = {m.id for m in rows}
    rows += [
        p
        for p in passages_of(session, tenant_id, [m.id for m in rows if m.kind == "turn"], lock=True)
        if p.id not in purged
    ]
    events = [_event(tenant_id, user_id, m.id, "purge", actor, run_id, _snapshot(m), None) for m in rows]
    delete_rows(session, tenant_id, rows)
    session.execute(insert(HistoryEvent), events)
    reopen_predecessors(session, tenant_id, user_id, actor, [m.id for m in rows], run_id)


def _summary_id(tenant_id: uuid.UUID, user_id: str, key: str, content: str) -> uuid.UUID:
    return uuid.uuid5(_SUMMARY_NAMESPACE, "\x1f".join([str(tenant_id), user_id, key, content]))


def _insert_summary(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    summary: Any,
    vector: Any,
    actor: str,
    run_id: uuid.UUID,
) -> None:
    memory_id = _summary_id(tenant_id, user_id, summary.key, summary.content)
    made = session.execute(
        insert(Memory)
        .values(
            id=memory_id,
            tenant_id=tenant_id,
            user_id=user_id,
            type="semantic",
            kind="summary",
            content=summary.content,
            content_hash=hashlib.sha256(summary.content.lower().encode()).hexdigest(),
            subject=summary.subject,
            event_at=summary.event_at,
            valid_from=summary.event_at,
            importance=0.3,
            metadata_={"summarises": [str(i) for i in summary.member_ids]},
            embedding=vector,
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(Memory.id)
    ).scalar_one_or_none()
    if made is None:
        return
    session.execute(
        insert(MemorySource)
        .from_select(
            ["memory_id", "message_id", "turn_id", "tenant_id", "user_id"],
            select(
                text(f"'{memory_id}'::uuid"),
                MemorySource.message_id,
                MemorySource.turn_id,
                MemorySource.tenant_id,
                MemorySource.user_id,
            ).where(MemorySource.memory_id.in_(list(summary.member_ids))),
        )
        .on_conflict_do_nothing()
    )
    session.execute(
        insert(HistoryEvent),
        [
            _event(
                tenant_id,
                user_id,
                memory_id,
                "summarize",
                actor,
                run_id,
                None,
                {
                    "kind": "summary",
                    "content": summary.content,
                    "summarises": [str(i) for i in summary.member_ids],
                },
            )
        ],
    )


# The metadata key of the memories a restored one was merged into (`restore`).
KEPT_APART = "kept_apart_from"


def restore(session: Session, tenant_id: uuid.UUID, memory_id: uuid.UUID, actor: str) -> bool:
    """Bring an archived memory back into search; a restore counts as a use, so the next run does
    not archive it again at once. False if it is not archived.

    A message comes back with its archived passages, and a passage of an archived message brings
    the message back (with its other passages): a passage is never searchable without its message.
    A passage whose message was deleted cannot be restored (`InvalidInput`)."""
    memory = session.execute(
        select(Memory)
        .where(Memory.id == memory_id, Memory.tenant_id == tenant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if memory is None or memory.status != "archived":
        return False
    if memory.kind == "passage":
        turn_id = session.execute(
            select(MemorySource.turn_id).where(MemorySource.memory_id == memory.id)
        ).scalar_one_or_none()
        turn = (
            session.get(Memory, turn_id, with_for_update=True, populate_existing=True)
            if turn_id is not None
            else None
        )
        if turn is None:
            raise InvalidInput(f"memory {memory_id} is a passage of a message that was deleted")
        if turn.status == "archived":
            memory = turn
    parts = [
        p
        for p in (passages_of(session, tenant_id, [memory.id], lock=True) if memory.kind == "turn" else [])
        if p.status == "archived"
    ]
    events = []
    if into := (memory.metadata_ or {}).get("merged_into"):
        # Taken back out of what a run merged it into: its own memory again, and the next run
        # leaves the two apart rather than merging them once more.
        metadata = {k: v for k, v in memory.metadata_.items() if k != "merged_into"}
        memory.metadata_ = metadata | {KEPT_APART: sorted({*metadata.get(KEPT_APART, []), into})}
    for row in (memory, *parts):
        before = _snapshot(row)
        row.status, row.archived_at, row.superseded_by = "active", None, None
        row.updated_at = func.now()
        events.append(_event(tenant_id, row.user_id, row.id, "restore", actor, None, before, None))
    memory.access_count += 1
    memory.last_accessed_at = func.now()
    session.flush()
    for event, row in zip(events, (memory, *parts), strict=True):
        event["after"] = _snapshot(row)
    session.execute(insert(HistoryEvent), events)
    if memory.attribute and memory.subject:  # a value back in force closes what it replaced again
        supersede_at_ingest(session, tenant_id, memory.user_id, {(memory.subject, memory.attribute)}, actor)
    return True


@dataclass(slots=True)
class RunReport:
    """A consolidation run over one or more users."""

    run_id: str
    dry_run: bool
    users: list[UserReport] = field(default_factory=list)
    seconds: float = 0.0

    def totals(self) -> dict[str, int]:
        keys = (
            "memories_before",
            "memories_after",
            "attributes",
            "superseded",
            "reopened",
            "merged",
            "entities_merged",
            "relations_folded",
            "summarised",
            "archived",
            "purged",
        )
        out = {k: sum(int(getattr(u, k)) for u in self.users) for k in keys}
        out["users"] = len(self.users)
        out["users_skipped"] = sum(1 for u in self.users if u.skipped)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
            "totals": self.totals(),
            "users": [u.as_dict() for u in self.users[:100]],
        }
