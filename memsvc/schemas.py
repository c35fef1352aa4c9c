"""The public data shapes of the v1 API, shared by the server and the SDK (`memsvc.client`).

Field names follow `shared/API.md`; they are the contract and do not change within v1.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

MemoryType = Literal["episodic", "semantic", "entity", "relation"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]

# Scope identifiers are opaque strings chosen by the client.
ScopeId = str


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Model):
    """One conversation message as the client sends it."""

    role: Literal["user", "assistant", "system", "tool"]
    content: str = Field(min_length=1)
    name: str | None = Field(default=None, max_length=255, description="speaker's name, e.g. 'Caroline'")
    id: str | None = Field(default=None, min_length=1, max_length=255, description="client message id")
    created_at: AwareDatetime | None = Field(default=None, description="when it was said; default: now")


class AddRequest(_Model):
    messages: list[Message] = Field(min_length=1)
    user_id: ScopeId = Field(min_length=1, max_length=255)
    agent_id: ScopeId | None = Field(default=None, min_length=1, max_length=255)
    session_id: ScopeId | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None
    wait: bool = False


class AddResult(BaseModel):
    """What one ingest made (the job's result)."""

    memory_ids: list[UUID] = Field(default_factory=list, description="ids of memories created")
    created: dict[str, int] = Field(default_factory=dict, description="count made per kind")
    duplicates: int = Field(default=0, description="messages already stored (idempotent re-send)")
    extractor: str | None = None
    notes: list[str] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(
        default_factory=dict, description="where the time went: extraction, embedding, database"
    )


class AddResponse(BaseModel):
    job_id: UUID
    status: JobStatus
    result: AddResult | None = None
    error: str | None = None


class SearchRequest(_Model):
    query: str = Field(min_length=1, max_length=4000)
    user_id: ScopeId = Field(min_length=1, max_length=255)
    limit: int = Field(default=10, ge=1, le=100)
    types: list[MemoryType] | None = Field(default=None, min_length=1)
    as_of: AwareDatetime | None = Field(default=None, description="see the world as it was at this time")
    filters: dict[str, Any] | None = Field(
        default=None, description="agent_id, session_id, kind, metadata (exact match of keys)"
    )

    @field_validator("filters")
    @classmethod
    def _known_filters(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        allowed = {"agent_id", "session_id", "kind", "metadata"}
        if value is not None and (unknown := set(value) - allowed):
            raise ValueError(f"unknown filter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        return value


class MemoryOut(BaseModel):
    """A memory as every endpoint returns it (search results carry `score`)."""

    id: UUID
    type: MemoryType
    kind: str | None = None
    content: str
    score: float | None = None
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    speaker: str | None = None
    role: str | None = None
    created_at: datetime | None = None
    event_at: datetime | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    status: str | None = None
    pinned: bool = False
    source_message_ids: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    results: list[MemoryOut]


class ContextRequest(_Model):
    query: str = Field(min_length=1, max_length=4000)
    user_id: ScopeId = Field(min_length=1, max_length=255)
    max_tokens: int = Field(default=1000, ge=50, le=32000)
    as_of: AwareDatetime | None = None


class ContextResponse(BaseModel):
    context: str
    items: list[MemoryOut]
    tokens: int = 0


class MemoryList(BaseModel):
    items: list[MemoryOut]
    next_cursor: str | None = None


class UpdateRequest(_Model):
    content: str | None = Field(default=None, min_length=1)
    metadata: dict[str, Any] | None = None
    pinned: bool | None = None


class HistoryEventOut(BaseModel):
    op: str
    at: datetime
    actor: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class HistoryResponse(BaseModel):
    events: list[HistoryEventOut]


class EntityOut(BaseModel):
    id: UUID
    name: str
    type: str
    aliases: list[str] = Field(default_factory=list)
    mention_count: int = 0
    source_message_ids: list[str] = Field(default_factory=list)


class RelationOut(BaseModel):
    id: UUID
    subject: str
    predicate: str
    object: str
    fact: str
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    source_message_ids: list[str] = Field(default_factory=list)


class GraphResponse(BaseModel):
    entities: list[EntityOut]
    relations: list[RelationOut]


class ConsolidateRequest(_Model):
    user_id: ScopeId | None = Field(default=None, min_length=1, max_length=255)


class JobOut(BaseModel):
    job_id: UUID
    status: JobStatus
    kind: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None


KeyScope = Literal["read", "write", "admin"]


class ApiKeyOut(BaseModel):
    """An API key as listed: never its secret or its hash."""

    id: UUID
    name: str
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    scopes: list[KeyScope]
    created_at: datetime
    last_used_at: datetime | None = Field(default=None, description="to the minute")
    revoked_at: datetime | None = Field(
        default=None, description="when it stops working: in the future while a rotation's grace period runs"
    )


class ApiKeyList(BaseModel):
    keys: list[ApiKeyOut]


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="the secret itself, shown in this answer only")


class CreateKeyRequest(_Model):
    name: str = Field(default="", max_length=200)
    scopes: list[KeyScope] = Field(
        default_factory=lambda: list[KeyScope](["read", "write"]),
        min_length=1,
        description="`admin` implies the others",
    )


class RotateKeyRequest(_Model):
    grace_seconds: int = Field(
        default=0, ge=0, le=7 * 24 * 3600, description="how long the old key keeps working (at most a week)"
    )


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    code: str | None = None
    errors: list[dict[str, Any]] | None = None
