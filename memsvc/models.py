"""Tables. Schemas of the API live in `memsvc.schemas`; these are storage only.

One `memories` table holds every searchable memory, episodic (turns, sessions) and semantic
(facts, preferences, plans, events, summaries), so one vector index and one full-text index
serve search over all of them; `EpisodicMemory` and `SemanticMemory` are its two mapped
kinds. The graph is `entities` + `relations`. `memory_sources` is provenance: each memory
links to exactly the messages (turns) that state it. `history` records every change.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import HALFVEC
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from memsvc.config import get_settings

EMBEDDING_DIM = get_settings().embedding_dim
TSV_CONFIG = "english"


def now_utc() -> Any:
    return func.now()


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONB, list[str]: ARRAY(Text)}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=now_utc())


class ApiKey(Base):
    """A bearer key. Only its SHA-256 is stored; `prefix` lets people tell keys apart.

    `scopes` are among `read`, `write`, `admin`; `revoked_at` may lie in the future while a
    rotated key's grace period runs.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(
            "cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'write', 'admin']::text[]",
            name="api_keys_scopes",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=now_utc())
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Memory(Base):
    """Any searchable memory; see `EpisodicMemory` and `SemanticMemory`."""

    __tablename__ = "memories"
    __table_args__ = (
        CheckConstraint("type IN ('episodic', 'semantic')", name="memories_type"),
        CheckConstraint("status IN ('active', 'superseded', 'archived')", name="memories_status"),
        Index("ix_memories_scope", "tenant_id", "user_id", "type", "created_at"),
        Index(
            "ix_memories_attribute",
            "tenant_id",
            "user_id",
            "subject",
            "attribute",
            postgresql_where=text("attribute IS NOT NULL"),
        ),
        Index("ix_memories_session", "tenant_id", "user_id", "session_id", "event_at"),
        # Idempotent ingest: one turn per client message id within a user.
        Index(
            "uq_memories_message",
            "tenant_id",
            "user_id",
            "message_id",
            unique=True,
            postgresql_where=text("message_id IS NOT NULL"),
        ),
        Index("ix_memories_tsv", "tsv", postgresql_using="gin"),
        # No ANN index on `embedding`: dense search scores a user's vectors exactly (migration 0006).
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(255))
    agent_id: Mapped[str | None] = mapped_column(String(255))
    session_id: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16))
    # turn | session (episodic); fact | preference | plan | event | summary (semantic)
    kind: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    # Episodic: who said it and the client's id for the message (turns only).
    role: Mapped[str | None] = mapped_column(String(32))
    speaker: Mapped[str | None] = mapped_column(String(255))
    message_id: Mapped[str | None] = mapped_column(String(255))
    position: Mapped[int | None] = mapped_column(Integer)  # order of a turn within its ingest batch/session
    # When it happened (turn time, session start); semantic memories: when it was stated.
    event_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event_end_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # a session's last turn
    # Minutes east of UTC event_at was given with (NULL: UTC): the speaker's calendar (`local_time`).
    utc_offset: Mapped[int | None] = mapped_column(SmallInteger)
    # Semantic: the subject it is about and when it holds in the world.
    subject: Mapped[str | None] = mapped_column(String(255))
    # The subject's attribute a fact states a value of ("residence", "job"): a newer value of the
    # same attribute supersedes it (`memsvc.consolidation.fact_slot`).
    attribute: Mapped[str | None] = mapped_column(String(64))
    valid_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    importance: Mapped[float] = mapped_column(Float, default=0.5)
    confidence: Mapped[float] = mapped_column(Float, default=1.0)
    status: Mapped[str] = mapped_column(String(16), default="active")
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    superseded_by: Mapped[uuid.UUID | None] = mapped_column(UUID)
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # TTL: forgotten then
    access_count: Mapped[int] = mapped_column(Integer, default=0)
    last_accessed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    embedding: Mapped[Any] = mapped_column(HALFVEC(EMBEDDING_DIM))
    # Maintained by Postgres from content; never written by us.
    tsv: Mapped[Any] = mapped_column(
        TSVECTOR, Computed(f"to_tsvector('{TSV_CONFIG}', content)", persisted=True)
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=now_utc())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=now_utc())

    __mapper_args__ = {"polymorphic_on": "type", "polymorphic_abstract": True}


class EpisodicMemory(Memory):
    """A turn (one message) or a session (an episode with its time span and an extractive digest)."""

    __mapper_args__ = {"polymorphic_identity": "episodic"}


class SemanticMemory(Memory):
    """A fact, preference, plan, event or summary, valid from `valid_from` until `valid_to`."""

    __mapper_args__ = {"polymorphic_identity": "semantic"}


class MemorySource(Base):
    """Provenance: memory `memory_id` is stated by message `message_id` (the turn `turn_id`)."""

    __tablename__ = "memory_sources"
    __table_args__ = (
        Index("ix_memory_sources_turn", "turn_id"),
        Index("ix_memory_sources_user", "tenant_id", "user_id"),
    )

    memory_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True
    )
    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    turn_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("memories.id", ondelete="SET NULL"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(255))


class Entity(Base):
    """A node of a user's graph: a person, place, organisation or thing, merged across mentions."""

    __tablename__ = "entities"
    __table_args__ = (Index("uq_entities_name", "tenant_id", "user_id", "normalized_name", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    normalized_name: Mapped[str] = mapped_column(String(255))
    entity_type: Mapped[str] = mapped_column(String(32), default="thing")
    aliases: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    summary: Mapped[str] = mapped_column(Text, default="")
    mention_count: Mapped[int] = mapped_column(Integer, default=0)
    valid_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="active")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    embedding: Mapped[Any] = mapped_column(HALFVEC(EMBEDDING_DIM), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=now_utc())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=now_utc())


class Relation(Base):
    """An edge: subject --predicate--> object, with the sentence that states it and its validity."""

    __tablename__ = "relations"
    __table_args__ = (
        Index("ix_relations_subject", "subject_id"),
        Index("ix_relations_object", "object_id"),
        Index("ix_relations_user", "tenant_id", "user_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(255))
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    predicate: Mapped[str] = mapped_column(String(100))
    object_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    fact: Mapped[str] = mapped_column(Text)
    memory_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("memories.id", ondelete="SET NULL"))
    valid_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="active")
    source_message_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=now_utc())


class EntityMention(Base):
    """Which memories mention which entity: the bridge the graph signal of search walks."""

    __tablename__ = "entity_mentions"
    __table_args__ = (Index("ix_entity_mentions_memory", "memory_id"),)

    entity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True
    )
    memory_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(255))


class HistoryEvent(Base):
    """Every change to a memory, by whom: never silent. Kept after the memory is deleted, without
    what it said (`store.unsay_in_history`); erasing the user erases it."""

    __tablename__ = "history"
    __table_args__ = (
        Index("ix_history_memory", "memory_id", "id"),
        Index("ix_history_user", "tenant_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(255))
    memory_id: Mapped[uuid.UUID] = mapped_column(UUID)
    # create | update | delete | supersede | merge | archive | restore | summarize | purge
    op: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(100))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    run_id: Mapped[uuid.UUID | None] = mapped_column(UUID)  # the consolidation run that made it
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=now_utc())


class Job(Base):
    """An ingest or consolidation request. The payload is kept until done, so nothing accepted is lost."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name="jobs_status"),
        Index("ix_jobs_user", "tenant_id", "user_id"),
        Index(
            "ix_jobs_open",
            "tenant_id",
            "status",
            "created_at",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # ingest | consolidate
    status: Mapped[str] = mapped_column(String(16), default="queued")
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The process running it (memsvc.workers.liveness.Runner) and the queue's attempt it runs.
    runner: Mapped[str | None] = mapped_column(Text)
    runner_attempt: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=now_utc())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=now_utc())


class MemoryChange(Base):
    """Change feed of `memories` (filled by a trigger) that GPU-resident indexes replay in order.

    It holds ids only, no content or user id, so erasing a user leaves nothing of theirs here
    while indexes still learn of the deletions.
    """

    __tablename__ = "memory_changes"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID)
    memory_id: Mapped[uuid.UUID] = mapped_column(UUID)
    op: Mapped[str] = mapped_column(String(1))  # I | U | D
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=now_utc())
