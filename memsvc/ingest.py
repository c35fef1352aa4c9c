"""Ingest: one batch of messages becomes turns, session episodes, facts, entities and relations.

Everything a batch produces is embedded in one batched call and written in one transaction
with multi-row inserts, so a crash leaves either nothing or everything of the batch, and a
retry completes it. Ids are derived from content (uuid5), so re-sending the same messages
(same client ids, or same content and time without ids) creates nothing new.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import REAL, cast, delete, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from memsvc.consolidation import (
    cancelled_plan,
    fact_slot,
    full_name_of_a_person,
    with_kin_statements,
    with_state_facts,
)
from memsvc.consolidation_store import (
    close_cancelled_plans,
    kin_keys,
    supersede_at_ingest,
    supersede_corrected,
    tag_stopped_states,
)
from memsvc.embedding import Embedder, Vector
from memsvc.extraction.base import CORRECTS_KEY, ExtractedEntity, ExtractedFact, Extraction, Extractor, Turn
from memsvc.extraction.corrections import LOOKBACK_MESSAGES, Correction, corrections_in
from memsvc.extraction.passages import Passage, PassageConfig, plan_passages
from memsvc.extraction.rules import ends_in_abbreviation, name_sources
from memsvc.local_time import local_time, utc_offset_of
from memsvc.models import Entity, EntityMention, HistoryEvent, Memory, MemorySource, Relation
from memsvc.ranking import CONTEXT_MAX_WORDS
from memsvc.schemas import AddRequest, AddResult, Message
from memsvc.store import (
    bulk_insert,
    hold_from_earlier,
    known_people,
    recount_mentions,
    stated_now,
    touch_feed,
    unsay_in_history,
)

log = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("6f1c5a52-4c1e-4b0e-9a55-1b9b0e1e7a11")
DIGEST_TURNS = 6  # a session digest quotes this many of its most informative turns
# Entities of one type this close in meaning are the same thing; the bar consolidation merges at too
# (59 labelled name pairs: different things reach 0.909, `bench/consolidation.py --entity-pairs`).
ENTITY_MERGE_COSINE = 0.95
PASSAGE_KEY = "passage"  # a passage's metadata: {turn_id, index} of the message it is part of
# A standing instruction's metadata: the requests it governs ("history"), whose vector it has.
APPLIES_TO_KEY = "applies_to"
# A session episode is rebuilt from all its turns as they arrive, its span too (an earlier turn
# sent late, its first turn deleted); an entity met again counts the new mentions and keeps the
# new spellings.
_SESSION_UPSERT = (
    "(id) DO UPDATE SET content = EXCLUDED.content, content_hash = EXCLUDED.content_hash, "
    "event_at = EXCLUDED.event_at, event_end_at = EXCLUDED.event_end_at, utc_offset = EXCLUDED.utc_offset, "
    "valid_from = EXCLUDED.valid_from, metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding, "
    "updated_at = now()"
)
# A relation said again cites the new messages too.
_RELATION_UPSERT = (
    "(id) DO UPDATE SET source_message_ids = ARRAY(SELECT DISTINCT m FROM "
    "unnest(relations.source_message_ids || EXCLUDED.source_message_ids) AS m ORDER BY m)"
)
_ENTITY_UPSERT = (
    "(id) DO UPDATE SET aliases = array_cat(entities.aliases, EXCLUDED.aliases), updated_at = now()"
)


def derived_id(*parts: object) -> uuid.UUID:
    """A stable id from the parts that make a memory what it is: the root of idempotency."""
    return uuid.uuid5(_NAMESPACE, "\x1f".join(str(p) for p in parts))


def content_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).lower().encode()).hexdigest()


def normalize_name(name: str) -> str:
    """Entity key: case, spacing, leading articles and possessives do not make a new entity."""
    words = name.lower().replace("’", "'").split()
    while words and words[0] in ("the", "a", "an", "my", "our", "his", "her", "their"):
        words = words[1:]
    text = " ".join(words)
    return text[:-2] if text.endswith("'s") else text


def turn_line(speaker: str, text: str) -> str:
    """A turn as one line of dialogue; the speaker's name carries meaning ("what did Caroline…")."""
    return f"{speaker}: {text}"


def turn_vector(own: Vector, own_words: int, previous: Vector | None, previous_words: int) -> Vector:
    """A turn's vector: the mean of its own line's vector and a vector of the exchange it answers.

    The exchange vector lets a search find answers that share no words with the question ("What did
    you paint?" → "A sunrise"); the own line keeps the turn findable by itself. The exchange is not
    encoded a second time: a mean-pooled encoder's vector of two concatenated lines is close to the
    length-weighted mean of the two lines' vectors, so it costs no extra forward pass (the second pass
    was half of all tokens ingest encoded; LoCoMo recall: BENCHMARKS.md).
    """
    if previous is None or previous_words > CONTEXT_MAX_WORDS:
        # After a long message (an assistant's answer) the exchange would be that message.
        return own
    exchange = own_words * own + previous_words * previous
    exchange /= max(float(np.linalg.norm(exchange)), 1e-12)
    return ((own + exchange) / 2).astype(np.float32)


def session_vector(quoted_lines: Sequence[str], vector_of: dict[str, Vector]) -> Vector:
    """A session episode's vector: the length-weighted mean of the vectors of the turns its digest
    quotes, each encoded whole as a turn line (which ingest encodes anyway), as `turn_vector`
    stands in for the exchange: the digest itself, the longest text of a batch, is not encoded."""
    weights = np.array([len(line.split()) for line in quoted_lines], dtype=np.float32)
    mean = (weights[:, None] * np.stack([vector_of[line] for line in quoted_lines])).sum(axis=0)
    vector: Vector = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    return vector


@dataclass(slots=True)
class PreparedTurn:
    id: uuid.UUID
    turn: Turn
    agent_id: str | None
    position: int  # order within its session, across batches
    metadata: dict[str, Any]
    previous_line: str | None = None  # the turn before it in its session


@dataclass(slots=True)
class Reading:
    """Messages as the extractor read them: a correction ("Sorry, I meant Tuesday.") as the message
    it corrects, rewritten, under its own id (what was said stays stored as said)."""

    turns: list[Turn]
    corrections: dict[str, Correction]  # by the correction's message id
    earlier_turn_ids: dict[str, uuid.UUID]  # the stored messages they could correct
    extraction: Extraction = field(default_factory=Extraction)


def _read_corrections(turns: Sequence[Turn], stored: dict[str | None, list[_StoredTurn]]) -> Reading:
    """`turns` read after the last messages `stored` before them in their sessions (`Reading`)."""
    earlier: list[Turn] = []
    turn_ids: dict[str, uuid.UUID] = {}
    for session_id in dict.fromkeys(t.session_id for t in turns):
        held = sorted(stored.get(session_id, ()), key=lambda s: -1 if s.position is None else s.position)
        for s in held[-LOOKBACK_MESSAGES:]:
            earlier.append(
                Turn(s.message_id, s.role or "user", s.speaker or "", s.content, s.event_at, session_id)
            )
            turn_ids[s.message_id] = s.id
    corrections = corrections_in(turns, earlier)
    read = [
        replace(corrections[t.message_id].corrected, message_id=t.message_id)
        if t.message_id in corrections
        else t
        for t in turns
    ]
    return Reading(read, corrections, turn_ids)


def _citing_originals(fact: ExtractedFact, corrections: dict[str, Correction]) -> ExtractedFact:
    """A fact read from a correction cites the message corrected too."""
    originals = [corrections[m].original for m in fact.source_message_ids if m in corrections]
    if not originals:
        return fact
    cited = tuple(dict.fromkeys([*fact.source_message_ids, *originals]))
    return replace(fact, source_message_ids=cited, corrects=tuple(dict.fromkeys(originals)))


def _close_corrected(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    corrections: dict[str, Correction],
    rows: _Rows,
    fact_rows: dict[str, uuid.UUID],
    turn_id_by_message: dict[str, uuid.UUID],
    actor: str,
) -> int:
    """After what corrections say was written: close the facts of the messages they correct, each
    replaced by a fact read from its correction (`supersede_corrected`)."""
    if not corrections:
        return 0
    cited = defaultdict(set)
    for source in rows.sources:
        cited[source["message_id"]].add(source["memory_id"])
    said_at = {m["message_id"]: m["event_at"] for m in rows.memories if m.get("message_id")}
    replaced = [
        (
            [turn_id_by_message[m] for m in correction.replaces],
            {fact_id: content for content, fact_id in fact_rows.items() if fact_id in cited[message_id]},
            said_at.get(message_id, correction.corrected.event_at),
        )
        for message_id, correction in corrections.items()
    ]
    return supersede_corrected(session, tenant_id, user_id, replaced, actor)


def prepare_turns(tenant_id: uuid.UUID, request: AddRequest, received_at: datetime) -> list[PreparedTurn]:
    """Give every message its id, speaker, time and session; the same input always gives the same ids."""
    prepared = []
    said: Counter[str] = Counter()
    for position, message in enumerate(request.messages):
        event_at = message.created_at or received_at
        # A day's session is the speaker's day: 17:00 and 18:00 in California are one session.
        session_id = request.session_id or f"auto-{event_at.date().isoformat()}"
        if message.id is not None:
            message_id = message.id
        else:
            message_id = _server_message_id(message, session_id)
            said[message_id] += 1
            if said[message_id] > 1:  # "ok" twice in one add: two messages
                message_id = _server_message_id(message, session_id, said[message_id] - 1)
        turn = Turn(
            message_id=message_id,
            role=message.role,
            speaker=message.name or message.role,
            text=message.content,
            event_at=event_at,
            session_id=session_id,
        )
        prepared.append(
            PreparedTurn(
                id=derived_id(tenant_id, request.user_id, "turn", message_id),
                turn=turn,
                agent_id=request.agent_id,
                position=position,
                metadata=dict(request.metadata or {}),
            )
        )
    return prepared


def _server_message_id(message: Message, session_id: str, said_before_in_add: int = 0) -> str:
    """Without a client id a message is known by what it says and when; with no time given, by
    what it says within its session (a day's, without `session_id`), so that a plain re-send, or
    a window of the conversation sent again, is recognised, and by how often the add said it
    before."""
    when = message.created_at.isoformat() if message.created_at else f"session:{session_id}"
    again = [f"again:{said_before_in_add}"] if said_before_in_add else []
    parts = [message.role, message.name or "", message.content, when, *again]
    return "m_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


@dataclass(slots=True)
class _StoredTurn:
    """A turn of a session as the digest and the numbering of new turns need it."""

    speaker: str | None
    content: str
    event_at: datetime
    message_id: str  # every turn has one
    id: uuid.UUID
    position: int | None
    role: str | None


@dataclass(slots=True)
class _Rows:
    memories: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


def passage_id(tenant_id: uuid.UUID, user_id: str, message_id: str, passage: Passage) -> uuid.UUID:
    """A passage's id, from its message and its span of words: the same passage, the same id."""
    return derived_id(tenant_id, user_id, "passage", message_id, passage.start_word, passage.end_word)


def passage_memory(
    tenant_id: uuid.UUID,
    user_id: str,
    message_id: str,
    turn_id: uuid.UUID,
    passage: Passage,
    *,
    agent_id: str | None,
    session_id: str | None,
    role: str,
    speaker: str | None,
    position: int | None,
    event_at: datetime,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    """A long message's passage as its memory row: the message's role, speaker, session and time,
    and `metadata.passage = {turn_id, index}` (ingest, backfill and edits write the same row)."""
    return {
        "id": passage_id(tenant_id, user_id, message_id, passage),
        "tenant_id": tenant_id,
        "user_id": user_id,
        "agent_id": agent_id,
        "session_id": session_id,
        "type": "episodic",
        "kind": "passage",
        "content": passage.text,
        "content_hash": content_hash(passage.text),
        "role": role,
        "speaker": speaker,
        "position": position,
        "event_at": event_at,
        "utc_offset": utc_offset_of(event_at),
        "valid_from": event_at,
        "metadata_": {**(metadata or {}), PASSAGE_KEY: {"turn_id": str(turn_id), "index": passage.index}},
    }


class Ingestor:
    """Turns an `AddRequest` into stored memories. Knows nothing of HTTP or the queue."""

    def __init__(
        self, embedder: Embedder, extractor: Extractor, passages: PassageConfig | None = None
    ) -> None:
        self.embedder = embedder
        self.extractor = extractor
        self.passages = passages or PassageConfig()

    def ingest(
        self, session: Session, tenant_id: uuid.UUID, request: AddRequest, received_at: datetime, actor: str
    ) -> AddResult:
        """Store one batch in the caller's transaction. Safe to call again with the same batch."""
        timings: dict[str, float] = defaultdict(float)
        started = time.perf_counter()
        user_id = request.user_id
        turns = prepare_turns(tenant_id, request, received_at)

        # Which messages are new: re-sent ones are skipped before any work is done on them.
        ids = [t.id for t in turns]
        stored = {
            row.id: (row.content, row.session_id)
            for row in session.execute(
                select(Memory.id, Memory.content, Memory.session_id).where(Memory.id.in_(ids))
            ).all()
        }
        existing = set(stored)
        # One id, other words: the stored message stands (an edit is a PATCH), and the add says so;
        # so it does when the id comes again in another session (it stays in its own).
        differing = [t.turn.message_id for t in turns if t.id in stored and stored[t.id][0] != t.turn.text]
        elsewhere = [
            t.turn.message_id
            for t in turns
            if t.id in stored and stored[t.id][0] == t.turn.text and stored[t.id][1] != t.turn.session_id
        ]
        # A message whose turn was deleted or purged stays gone when the conversation is sent again.
        unseen = [i for i in ids if i not in existing]
        gone = (
            set(
                session.execute(
                    select(HistoryEvent.memory_id).where(
                        HistoryEvent.memory_id.in_(unseen),
                        HistoryEvent.tenant_id == tenant_id,
                        HistoryEvent.op.in_(("delete", "purge")),
                    )
                ).scalars()
            )
            if unseen
            else set()
        )
        # A message sent twice in one add (its id twice, the same words) is one message too.
        new_turns = list(
            {t.id: t for t in reversed(turns) if t.id not in existing and t.id not in gone}.values()
        )
        new_turns.reverse()
        notes = [f"{len(gone)} message(s) deleted before, not stored again"] if gone else []
        if differing:
            notes.append(
                f"{len(differing)} message(s) stored before with other text, kept as stored (edit one "
                f"with PATCH /v1/memories/{{id}}): {', '.join(differing[:5])}"
            )
        if elsewhere:
            notes.append(
                f"{len(elsewhere)} message(s) stored before in another session, kept there: "
                f"{', '.join(elsewhere[:5])}"
            )
        if not new_turns:
            timings["database"] += time.perf_counter() - started
            return AddResult(duplicates=len(turns), extractor=self.extractor.name, notes=notes)
        stored_turns = self._place_in_sessions(session, tenant_id, user_id, new_turns)
        timings["database"] += time.perf_counter() - started

        t0 = time.perf_counter()
        reading = self._read(
            [t.turn for t in new_turns],
            stored_turns,
            known_people(session, tenant_id, user_id),
            kin_keys(session, tenant_id, user_id),
        )
        extraction = reading.extraction
        timings["extraction"] += time.perf_counter() - t0

        rows = _Rows()
        turn_id_by_message = {**reading.earlier_turn_ids, **{t.turn.message_id: t.id for t in turns}}
        self._turn_rows(rows, tenant_id, user_id, new_turns, actor)
        said = {m["message_id"]: (m["event_at"], m["session_id"]) for m in rows.memories}
        batch = (request.agent_id, request.metadata)
        fact_rows = self._fact_rows(
            rows, tenant_id, user_id, batch, extraction, turn_id_by_message, said, actor
        )
        self._passage_rows(rows, tenant_id, user_id, new_turns, actor, self.passages)
        digests = _plan_sessions(new_turns, stored_turns)
        created = self._write(
            session, tenant_id, user_id, rows, reading, digests, turn_id_by_message, fact_rows, actor, timings
        )
        return AddResult(
            # The episodes of the sessions it added to are made (or rebuilt) by it too.
            memory_ids=[m["id"] for m in rows.memories]
            + [derived_id(tenant_id, user_id, "session", d.session_id) for d in digests],
            created=dict(created),
            duplicates=len(turns) - len(new_turns),
            extractor=extraction.extractor or self.extractor.name,
            notes=[*notes, *extraction.notes],
            timings_ms={k: round(v * 1000, 2) for k, v in timings.items()},
        )

    def _write(
        self,
        session: Session,
        tenant_id: uuid.UUID,
        user_id: str,
        rows: _Rows,
        reading: Reading,
        digests: Sequence[_SessionPlan],
        turn_id_by_message: dict[str, uuid.UUID],
        fact_rows: dict[str, uuid.UUID],
        actor: str,
        timings: dict[str, float],
    ) -> dict[str, int]:
        """Embed and store what a batch made (its rows, the sessions it touched, its graph), then
        close what its new values replace, the plans it calls off and what it corrects. Returns
        what was made, by kind."""
        extraction = reading.extraction
        # Entities need the user's existing graph to merge with; read it before embedding.
        t0 = time.perf_counter()
        restated = _onto_stated(session, tenant_id, user_id, rows, fact_rows, actor)
        known_entities = self._known_entities(session, tenant_id, user_id)
        timings["database"] += time.perf_counter() - t0

        # One batched embedding call for everything this batch made, each distinct text once; the
        # session digests' vectors come from their turns' (lines of stored turns are most often
        # in the embedder's cache).
        previous_lines = [m.pop("_previous_line", None) for m in rows.memories]
        own_texts = [m.pop("_embed") for m in rows.memories]
        entity_names = [e.name for e in extraction.entities]
        quoted = [line for d in digests for line in d.quoted_lines]
        texts = list(dict.fromkeys([*own_texts, *filter(None, previous_lines), *entity_names, *quoted]))
        t0 = time.perf_counter()
        vector_of = dict(zip(texts, self.embedder.embed(texts), strict=True))
        timings["embedding"] += time.perf_counter() - t0
        for row, text, previous in zip(rows.memories, own_texts, previous_lines, strict=True):
            if row["kind"] == "turn":
                row["embedding"] = turn_vector(
                    vector_of[text],
                    len(text.split()),
                    vector_of[previous] if previous else None,
                    len(previous.split()) if previous else 0,
                )
            else:
                row["embedding"] = vector_of[text]
        entity_vectors = [vector_of[name] for name in entity_names]

        t0 = time.perf_counter()
        created: dict[str, int] = defaultdict(int)
        tag_stopped_states(session, tenant_id, user_id, rows.memories)
        # The rows' keys are ORM attribute names (`metadata_`), as bulk_insert takes them.
        inserted = set()
        for memory_id, kind in bulk_insert(
            session, Memory, rows.memories, conflict="(id) DO NOTHING", returning="id, kind"
        ):
            inserted.add(memory_id)
            created[kind] += 1
        # A row already there (a fact an edited message still states) was created before.
        there = {m["id"] for m in rows.memories} - inserted
        rows.history = [h for h in rows.history if h["memory_id"] not in there]
        timings["database"] += time.perf_counter() - t0
        # Session episodes grow as turns arrive: rebuild each touched session from all its turns.
        t0 = time.perf_counter()
        created["session"] += _upsert_sessions(session, tenant_id, user_id, digests, vector_of, rows, actor)
        timings["database"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        bulk_insert(session, MemorySource, rows.sources)
        touch_feed(session, tenant_id, restated)  # they cite more messages now
        n_entities, n_relations = self._write_graph(
            session,
            tenant_id,
            user_id,
            extraction,
            entity_vectors,
            known_entities,
            turn_id_by_message,
            fact_rows,
        )
        created["entity"] += n_entities
        created["relation"] += n_relations
        bulk_insert(session, HistoryEvent, rows.history)
        # A newer value of an attribute ("moved to Boston") closes the older one ("lives in Denver"),
        # and the turn that said only the old value with it: after the sources are written, which
        # tell that turn (a batch older than what is stored closes its own facts and turns), and
        # after the creation events, which come first in each memory's history.
        slots = {(m["subject"], m["attribute"]) for m in rows.memories if m.get("attribute")}
        if superseded := supersede_at_ingest(session, tenant_id, user_id, slots, actor):
            created["superseded"] = superseded
        # "The Tokyo trip got cancelled" ends the plan to go to Tokyo.
        cancellations = [
            (m["id"], m["subject"], words, m["event_at"])
            for m in rows.memories
            if m["type"] == "semantic" and (words := cancelled_plan(m["content"], m.get("subject")))
        ]
        if cancelled := close_cancelled_plans(session, tenant_id, user_id, cancellations, actor):
            created["cancelled"] = cancelled
        if corrected := _close_corrected(
            session, tenant_id, user_id, reading.corrections, rows, fact_rows, turn_id_by_message, actor
        ):
            created["corrected"] = corrected
        timings["database"] += time.perf_counter() - t0
        return created

    def _read(
        self,
        turns: Sequence[Turn],
        stored: dict[str | None, list[_StoredTurn]],
        people: Collection[str],
        kin: Sequence[tuple[str, str]],
    ) -> Reading:
        """`turns` as ingest reads them, after the messages `stored` before them (corrections),
        knowing the user's `people` and the facts that say whose someone is (`kin_keys`)."""
        reading = _read_corrections(turns, stored)
        extraction = self.extractor.extract(reading.turns, known_people=people)
        # An entity's sources are the messages that name it, whatever an extractor (an LLM) cited.
        extraction.entities = name_sources(extraction.entities, turns)
        # What a correction says is stated by it and by the message it corrects.
        facts = [_citing_originals(fact, reading.corrections) for fact in extraction.facts]
        extraction.facts = with_kin_statements(facts, kin)
        reading.extraction = extraction
        return reading

    def read_again(self, session: Session, turn: Memory) -> Reading:
        """A stored message as ingest reads it: its text now, on the speaker's clock, after the
        messages of its session before it (an edited correction corrects them again)."""
        said = Turn(
            turn.message_id or "",
            turn.role or "user",
            turn.speaker or "",
            turn.content,
            local_time(turn.event_at, turn.utc_offset),
            turn.session_id,
        )
        stored = _session_turns(session, turn.tenant_id, turn.user_id, [turn.session_id])
        before = [
            s
            for s in stored.get(turn.session_id, ())
            if s.position is not None and turn.position is not None and s.position < turn.position
        ]
        return self._read(
            [said],
            {turn.session_id: before},
            known_people(session, turn.tenant_id, turn.user_id),
            kin_keys(session, turn.tenant_id, turn.user_id),
        )

    @staticmethod
    def statements(reading: Reading) -> frozenset[str]:
        """What a reading states, as the facts ingest stores read."""
        return frozenset(fact.content for fact in with_state_facts(reading.extraction.facts))

    def reread(self, session: Session, turn: Memory, reading: Reading, actor: str) -> dict[str, int]:
        """After a message's text was edited, and what it no longer states was forgotten
        (`store.forget_statements`, `store.forget_mentions`): its facts, entities and relations as
        ingest reads them from the new text (`read_again`), stored as ingest stores them; what it
        still states is already there; what it now corrects is closed. Returns what was made."""
        (said,) = reading.turns
        rows = _Rows()
        turn_ids = {**reading.earlier_turn_ids, said.message_id: turn.id}
        fact_rows = self._fact_rows(
            rows,
            turn.tenant_id,
            turn.user_id,
            (turn.agent_id, turn.metadata_),
            reading.extraction,
            turn_ids,
            {said.message_id: (said.event_at, turn.session_id)},
            actor,
        )
        timings: dict[str, float] = defaultdict(float)
        return self._write(
            session, turn.tenant_id, turn.user_id, rows, reading, [], turn_ids, fact_rows, actor, timings
        )

    def rebuild_session(
        self, session: Session, tenant_id: uuid.UUID, user_id: str, session_id: str, actor: str
    ) -> uuid.UUID | None:
        """After a turn of the session was deleted: its episode from the turns left, so that its
        digest quotes nothing deleted and its provenance is the turns it has. With no turn left,
        returns the episode's id, for the caller to delete."""
        turns = _session_turns(session, tenant_id, user_id, [session_id]).get(session_id, [])
        memory_id = derived_id(tenant_id, user_id, "session", session_id)
        if not turns:
            return memory_id
        session.execute(
            delete(MemorySource).where(MemorySource.memory_id == memory_id, MemorySource.turn_id.is_(None))
        )
        plan = _session_plan(session_id, turns)
        vector_of = dict(zip(plan.quoted_lines, self.embedder.embed(plan.quoted_lines), strict=True))
        rows = _Rows()
        _upsert_sessions(session, tenant_id, user_id, [plan], vector_of, rows, actor)
        bulk_insert(session, MemorySource, rows.sources)
        # Its `create` quoted the turn deleted or edited: a digest's history is derived, not said.
        unsay_in_history(session, tenant_id, [memory_id])
        return None

    # -- rows -----------------------------------------------------------------------------

    @staticmethod
    def _turn_rows(
        rows: _Rows, tenant_id: uuid.UUID, user_id: str, turns: Sequence[PreparedTurn], actor: str
    ) -> None:
        for prepared in turns:
            turn = prepared.turn
            rows.memories.append(
                {
                    "id": prepared.id,
                    "tenant_id": tenant_id,
                    "user_id": user_id,
                    "agent_id": prepared.agent_id,
                    "session_id": turn.session_id,
                    "type": "episodic",
                    "kind": "turn",
                    "content": turn.text,
                    "content_hash": content_hash(turn.text),
                    "role": turn.role,
                    "speaker": turn.speaker,
                    "message_id": turn.message_id,
                    "position": prepared.position,
                    "event_at": turn.event_at,
                    "utc_offset": utc_offset_of(turn.event_at),
                    "valid_from": turn.event_at,
                    "metadata_": prepared.metadata,
                    "_embed": turn_line(turn.speaker, turn.text),
                    "_previous_line": prepared.previous_line,
                }
            )
            rows.sources.append(_source(prepared.id, turn.message_id, prepared.id, tenant_id, user_id))
            rows.history.append(_created(tenant_id, user_id, prepared.id, actor, "turn", turn.text))

    @staticmethod
    def _passage_rows(
        rows: _Rows,
        tenant_id: uuid.UUID,
        user_id: str,
        turns: Sequence[PreparedTurn],
        actor: str,
        config: PassageConfig,
    ) -> None:
        """A long message's passages: each a memory of its own whose provenance is that message."""
        for prepared in turns:
            turn = prepared.turn
            for passage in plan_passages(turn.text, config):
                memory = passage_memory(
                    tenant_id,
                    user_id,
                    turn.message_id,
                    prepared.id,
                    passage,
                    agent_id=prepared.agent_id,
                    session_id=turn.session_id,
                    role=turn.role,
                    speaker=turn.speaker,
                    position=prepared.position,
                    event_at=turn.event_at,
                    metadata=prepared.metadata,
                )
                memory_id = memory["id"]
                rows.memories.append({**memory, "_embed": turn_line(turn.speaker, passage.text)})
                rows.sources.append(_source(memory_id, turn.message_id, prepared.id, tenant_id, user_id))
                rows.history.append(_created(tenant_id, user_id, memory_id, actor, "passage", passage.text))

    @staticmethod
    def _fact_rows(
        rows: _Rows,
        tenant_id: uuid.UUID,
        user_id: str,
        batch: tuple[str | None, dict[str, Any] | None],
        extraction: Extraction,
        turn_id_by_message: dict[str, uuid.UUID],
        said: dict[str, tuple[datetime, str | None]],
        actor: str,
    ) -> dict[str, uuid.UUID]:
        """Semantic memories; returns fact content → id so relations can point at their fact."""
        agent_id, metadata_of_batch = batch
        by_content: dict[str, uuid.UUID] = {}
        for fact in with_state_facts(extraction.facts):
            sources = tuple(s for s in fact.source_message_ids if s in turn_id_by_message)
            if sources and fact.content in by_content:
                # Said again in the batch: the one memory cites every message that says it.
                stated_id = by_content[fact.content]
                said_by = {r["message_id"] for r in rows.sources if r["memory_id"] == stated_id}
                for message_id in sources:
                    if message_id not in said_by and len(said_by) < RESTATED_MAX_SOURCES:
                        said_by.add(message_id)
                        turn_id = turn_id_by_message[message_id]
                        rows.sources.append(_source(stated_id, message_id, turn_id, tenant_id, user_id))
                continue
            if not sources:
                continue
            memory_id = derived_id(tenant_id, user_id, "fact", fact.kind, fact.content, *sorted(sources))
            by_content[fact.content] = memory_id
            # Stated when its last source turn of this batch was said (a corrected fact also cites
            # the stored message it corrects).
            stated_at: datetime = max(said[s][0] for s in sources if s in said)
            rows.memories.append(
                {
                    "id": memory_id,
                    "tenant_id": tenant_id,
                    "user_id": user_id,
                    "agent_id": agent_id,
                    "session_id": said[sources[0]][1] if sources[0] in said else None,
                    "type": "semantic",
                    "kind": fact.kind,
                    "content": fact.content,
                    "content_hash": content_hash(fact.content),
                    "subject": fact.subject,
                    "attribute": slot.attribute if (slot := fact_slot(fact.content, fact.subject)) else None,
                    "event_at": stated_at,
                    "utc_offset": utc_offset_of(stated_at),
                    "valid_from": fact.valid_from or stated_at,
                    "importance": fact.importance,
                    "confidence": fact.confidence,
                    "metadata_": (metadata := _fact_metadata(metadata_of_batch, fact)),
                    "_embed": vector_text(fact.kind, fact.content, metadata),
                }
            )
            for message_id in sources:
                rows.sources.append(
                    _source(memory_id, message_id, turn_id_by_message[message_id], tenant_id, user_id)
                )
            rows.history.append(_created(tenant_id, user_id, memory_id, actor, fact.kind, fact.content))
        return by_content

    # -- sessions -------------------------------------------------------------------------

    @staticmethod
    def _place_in_sessions(
        session: Session, tenant_id: uuid.UUID, user_id: str, new_turns: Sequence[PreparedTurn]
    ) -> dict[str | None, list[_StoredTurn]]:
        """Number new turns after what their session already holds, and link each to the turn before.

        Returns the turns each touched session already holds (read once: the session digests are
        rebuilt from them and the new turns, without reading them back after the insert)."""
        stored = _session_turns(session, tenant_id, user_id, {t.turn.session_id for t in new_turns})
        last: dict[str | None, tuple[int, str | None]] = {}
        for session_id, turns in stored.items():
            tail = max(turns, key=lambda t: -1 if t.position is None else t.position)
            position = tail.position if tail.position is not None else -1
            last[session_id] = (position, turn_line(tail.speaker or "", tail.content))
        for prepared in new_turns:
            position, previous = last.get(prepared.turn.session_id, (-1, None))
            prepared.position, prepared.previous_line = position + 1, previous
            last[prepared.turn.session_id] = (
                position + 1,
                turn_line(prepared.turn.speaker, prepared.turn.text),
            )
        return stored

    # -- graph ----------------------------------------------------------------------------

    @staticmethod
    def _known_entities(session: Session, tenant_id: uuid.UUID, user_id: str) -> list[Any]:
        return list(
            session.execute(
                select(
                    Entity.id,
                    Entity.normalized_name,
                    Entity.entity_type,
                    Entity.aliases,
                    # As a float array: the driver decodes it in C, not halfvec text in Python.
                    cast(Entity.embedding, ARRAY(REAL)).label("embedding"),
                ).where(Entity.tenant_id == tenant_id, Entity.user_id == user_id)
            ).all()
        )

    def _write_graph(
        self,
        session: Session,
        tenant_id: uuid.UUID,
        user_id: str,
        extraction: Extraction,
        vectors: Sequence[Vector],
        known: list[Any],
        turn_id_by_message: dict[str, uuid.UUID],
        fact_ids: dict[str, uuid.UUID],
    ) -> tuple[int, int]:
        if not extraction.entities:
            return 0, 0
        by_key = {row.normalized_name: row.id for row in known}
        for row in known:  # names merged away by consolidation live on as aliases of the survivor
            for alias in row.aliases or ():
                by_key.setdefault(normalize_name(alias), row.id)
        known_vectors = [
            (row.id, row.entity_type, np.asarray(row.embedding, dtype=np.float32))
            for row in known
            if row.embedding
        ]
        entity_values: dict[uuid.UUID, dict[str, Any]] = {}
        id_by_name: dict[str, uuid.UUID] = {}
        mentions: set[tuple[uuid.UUID, uuid.UUID]] = set()
        first_names = _first_names(known, extraction.entities)
        for entity, vector in zip(extraction.entities, vectors, strict=True):
            key = normalize_name(entity.name)
            if not key:
                continue
            if full_name_of_a_person(key, entity.type, first_names):
                entity = replace(entity, type="person")
            entity_id = (
                by_key.get(key)
                or _closest(known_vectors, entity.type, vector)
                or derived_id(tenant_id, user_id, "entity", key)
            )
            by_key.setdefault(key, entity_id)
            id_by_name[entity.name] = entity_id
            value = entity_values.setdefault(
                entity_id,
                {
                    "id": entity_id,
                    "tenant_id": tenant_id,
                    "user_id": user_id,
                    "name": entity.name,
                    "normalized_name": key,
                    "entity_type": entity.type,
                    "aliases": [],
                    "mention_count": 0,
                    "embedding": vector,
                },
            )
            if entity.name != value["name"] and entity.name not in value["aliases"]:
                value["aliases"].append(entity.name)
            value["aliases"].extend(a for a in entity.aliases if a not in value["aliases"])
            known_vectors.append((entity_id, entity.type, vector))
            mentions.update(
                (entity_id, turn_id_by_message[m])
                for m in entity.source_message_ids
                if m in turn_id_by_message
            )
        bulk_insert(
            session, Entity, _keep_known_keys(list(entity_values.values()), known), conflict=_ENTITY_UPSERT
        )
        relation_values = []
        for relation in extraction.relations:
            subject_id, object_id = id_by_name.get(relation.subject), id_by_name.get(relation.object)
            sources = [m for m in relation.source_message_ids if m in turn_id_by_message]
            if not subject_id or not object_id or not sources:
                continue
            relation_values.append(
                {
                    "id": derived_id(
                        tenant_id,
                        user_id,
                        "relation",
                        subject_id,
                        relation.predicate,
                        object_id,
                        relation.fact,
                    ),
                    "tenant_id": tenant_id,
                    "user_id": user_id,
                    "subject_id": subject_id,
                    "predicate": relation.predicate,
                    "object_id": object_id,
                    "fact": relation.fact,
                    "memory_id": fact_ids.get(relation.fact),
                    "valid_from": relation.valid_from,
                    "source_message_ids": sources,
                }
            )
        bulk_insert(session, Relation, relation_values, conflict=_RELATION_UPSERT)
        bulk_insert(
            session,
            EntityMention,
            [
                {"entity_id": e, "memory_id": m, "tenant_id": tenant_id, "user_id": user_id}
                for e, m in sorted(mentions)
            ],
        )
        recount_mentions(session, entity_values)
        return len(entity_values), len(relation_values)


def _first_names(known: Sequence[Any], entities: Sequence[ExtractedEntity]) -> set[str]:
    """The names of people (known or in this batch) that are one word: first names."""
    named = [(row.normalized_name, row.entity_type) for row in known]
    named += [(normalize_name(e.name), e.type) for e in entities]
    return {key for key, kind in named if kind == "person" and key and " " not in key}


def _keep_known_keys(rows: list[dict[str, Any]], known: list[Any]) -> list[dict[str, Any]]:
    """A spelling merged into an existing entity by meaning becomes an alias; the row keeps its key."""
    known_ids = {r.id: r.normalized_name for r in known}
    for row in rows:
        if row["id"] in known_ids:
            row["normalized_name"] = known_ids[row["id"]]
    return rows


def _closest(
    candidates: list[tuple[uuid.UUID, str, np.ndarray[Any, Any]]],
    entity_type: str,
    vector: np.ndarray[Any, Any],
) -> uuid.UUID | None:
    best, best_score = None, ENTITY_MERGE_COSINE
    for entity_id, other_type, other in candidates:
        if other_type != entity_type:
            continue
        score = float(np.dot(vector, other))
        if score >= best_score:
            best, best_score = entity_id, score
    return best


def _session_turns(
    session: Session, tenant_id: uuid.UUID, user_id: str, session_ids: Iterable[str | None]
) -> dict[str | None, list[_StoredTurn]]:
    """The turns these sessions hold, by session."""
    rows = session.execute(
        select(Memory.session_id, Memory.speaker, Memory.content, Memory.event_at, Memory.message_id)
        .add_columns(Memory.id, Memory.position, Memory.role, Memory.utc_offset)
        .where(
            Memory.tenant_id == tenant_id,
            Memory.user_id == user_id,
            Memory.kind == "turn",
            Memory.session_id.in_(list(session_ids)),
        )
    ).all()
    stored: dict[str | None, list[_StoredTurn]] = defaultdict(list)
    for row in rows:
        # On the speaker's clock, as a new turn's time is: a correction resolves "Tuesday" by it.
        turn = _StoredTurn(*row[1:-1])
        turn.event_at = local_time(turn.event_at, row.utc_offset)
        stored[row.session_id].append(turn)
    return stored


@dataclass(slots=True)
class _SessionPlan:
    """A session episode as rebuilt from all its turns (those stored and the new ones), in time order."""

    session_id: str
    turns: list[_StoredTurn]
    digest: str
    quoted_lines: list[str]  # the lines of the turns the digest quotes, whole


def _plan_sessions(
    new_turns: Sequence[PreparedTurn], stored: dict[str | None, list[_StoredTurn]]
) -> list[_SessionPlan]:
    """Each touched session's turns in time order (those it held and the new ones) and its digest."""
    plans = []
    for session_id in sorted({t.turn.session_id for t in new_turns if t.turn.session_id}):
        turns = [*stored.get(session_id, ())]
        turns += [
            _StoredTurn(
                t.turn.speaker, t.turn.text, t.turn.event_at, t.turn.message_id, t.id, t.position, t.turn.role
            )
            for t in new_turns
            if t.turn.session_id == session_id
        ]
        plans.append(_session_plan(session_id, turns))
    return plans


def _session_plan(session_id: str, turns: list[_StoredTurn]) -> _SessionPlan:
    # In time order, ties by position (as ORDER BY event_at, position with NULLs last).
    turns.sort(key=lambda t: (t.event_at, t.position is None, t.position or 0))
    items = [(r.speaker or "", r.content) for r in turns]
    quoted = [turn_line(*items[i]) for i in digest_turns(items)]
    return _SessionPlan(session_id, turns, session_digest(items), quoted)


def _upsert_sessions(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    plans: Sequence[_SessionPlan],
    vector_of: dict[str, Vector],
    rows_out: _Rows,
    actor: str,
) -> int:
    """Write each touched session's episode; its provenance rows join `rows_out.sources`, and a
    `create` event the history of a session new here (a digest rebuilt as turns arrive is derived
    from them, and its rebuilds are not events)."""
    values: list[dict[str, Any]] = []
    for plan in plans:
        memory_id = derived_id(tenant_id, user_id, "session", plan.session_id)
        start, end = plan.turns[0].event_at, plan.turns[-1].event_at
        values.append(
            {
                "id": memory_id,
                "tenant_id": tenant_id,
                "user_id": user_id,
                "session_id": plan.session_id,
                "type": "episodic",
                "kind": "session",
                "content": plan.digest,
                "content_hash": content_hash(plan.digest),
                "event_at": start,
                "event_end_at": end,
                "utc_offset": utc_offset_of(start),
                "valid_from": start,
                "importance": 0.3,
                "metadata_": {"turns": len(plan.turns)},
                "embedding": session_vector(plan.quoted_lines, vector_of),
            }
        )
        rows_out.sources.extend(
            _source(memory_id, turn.message_id, turn.id, tenant_id, user_id) for turn in plan.turns
        )
    # `xmax = 0`: the row was inserted by this statement, not updated on conflict.
    inserted = {
        memory_id
        for memory_id, new in bulk_insert(
            session, Memory, values, conflict=_SESSION_UPSERT, returning="id, xmax = 0"
        )
        if new
    }
    rows_out.history.extend(
        _created(tenant_id, user_id, v["id"], actor, "session", v["content"])
        for v in values
        if v["id"] in inserted
    )
    return len(values)


def digest_turns(turns: Sequence[tuple[str, str]]) -> list[int]:
    """Which (speaker, text) turns a session digest quotes: the longest few, in order."""
    return sorted(sorted(range(len(turns)), key=lambda i: -len(turns[i][1]))[:DIGEST_TURNS])


def session_digest(turns: Iterable[tuple[str, str]]) -> str:
    """A compact extractive digest: the longest few turns, in order, shortened to one line each."""
    items = list(turns)
    lines = []
    for i in digest_turns(items):
        speaker, text = items[i]
        lines.append(f"{speaker}: {_first_sentence(text)[:160]}")
    return " | ".join(lines)


def _first_sentence(text: str) -> str:
    """Up to the first ". " that ends a sentence ("Dr. Patel" goes on)."""
    for end in re.finditer(r"\. ", text):
        if not ends_in_abbreviation(text[: end.start() + 1]):
            return text[: end.start()].strip()
    return text.strip()


def is_instruction(kind: str, metadata: dict[str, Any] | None) -> bool:
    """A standing instruction: a preference that names the requests it governs."""
    topic = (metadata or {}).get(APPLIES_TO_KEY)
    return kind == "preference" and isinstance(topic, str) and bool(topic)


def vector_text(kind: str, content: str, metadata: dict[str, Any] | None) -> str:
    """The text a semantic memory's vector is made from: a standing instruction's topic (the
    requests it governs find it), else its content."""
    return str(metadata[APPLIES_TO_KEY]) if metadata and is_instruction(kind, metadata) else content


def _fact_metadata(batch: dict[str, Any] | None, fact: ExtractedFact) -> dict[str, Any]:
    """The batch's metadata, and the requests a standing instruction governs: only the extractor
    says what is an instruction (a batch tagged `applies_to` makes none of its facts one)."""
    metadata = {k: v for k, v in (batch or {}).items() if k not in (APPLIES_TO_KEY, CORRECTS_KEY)}
    if fact.corrects:
        metadata[CORRECTS_KEY] = list(fact.corrects)
    return metadata | ({APPLIES_TO_KEY: fact.applies_to} if fact.applies_to else {})


# A fact said again is one memory citing every message that says it, up to the messages a result
# may come from and still name the turns that answer (more and it names none: the metric's rule,
# shared/data/README.md); past that, a new memory.
RESTATED_MAX_SOURCES = 5


def _onto_stated(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    rows: _Rows,
    fact_rows: dict[str, uuid.UUID],
    actor: str,
) -> list[uuid.UUID]:
    """New facts the user's current memories already state word for word ("Zoe is allergic to
    peanuts", said again a month later) are not stored again: their messages become sources of the
    memory that states them, which holds from the earliest of them. Returns the memories that got
    sources."""
    new = {m["content_hash"]: m for m in rows.memories if m["type"] == "semantic"}
    onto: dict[uuid.UUID, uuid.UUID] = {}
    for digest, (stated_id, kind, cited) in stated_now(session, tenant_id, user_id, list(new)).items():
        row = new[digest]
        adding = sum(1 for r in rows.sources if r["memory_id"] == row["id"])
        if row["kind"] == kind and row["id"] != stated_id and cited + adding <= RESTATED_MAX_SOURCES:
            onto[row["id"]] = stated_id
    if not onto:
        return []
    earliest: dict[uuid.UUID, datetime] = {}
    for m in rows.memories:
        if m["id"] in onto and m.get("valid_from") is not None:
            stated_id = onto[m["id"]]
            earliest[stated_id] = min(m["valid_from"], earliest.get(stated_id, m["valid_from"]))
    hold_from_earlier(session, tenant_id, user_id, earliest, actor)
    rows.memories = [m for m in rows.memories if m["id"] not in onto]
    rows.history = [h for h in rows.history if h["memory_id"] not in onto]
    for source in rows.sources:
        source["memory_id"] = onto.get(source["memory_id"], source["memory_id"])
    for content, memory_id in fact_rows.items():
        fact_rows[content] = onto.get(memory_id, memory_id)
    return sorted(set(onto.values()))


def _source(
    memory_id: uuid.UUID, message_id: str, turn_id: uuid.UUID, tenant_id: uuid.UUID, user_id: str
) -> dict[str, Any]:
    return {
        "memory_id": memory_id,
        "message_id": message_id,
        "turn_id": turn_id,
        "tenant_id": tenant_id,
        "user_id": user_id,
    }


def _created(
    tenant_id: uuid.UUID, user_id: str, memory_id: uuid.UUID, actor: str, kind: str, content: str
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "user_id": user_id,
        "memory_id": memory_id,
        "op": "create",
        "actor": actor,
        "before": None,
        "after": {"kind": kind, "content": content},
    }
