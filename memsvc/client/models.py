"""What the v1 API answers: the models the server returns and the SDK parses, defined once.

Part of the SDK (`memsvc-client` ships it with only pydantic and httpx); `memsvc.schemas`
re-exports them beside the request models. Field names follow docs/API.md: they are the contract
and do not change within v1.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

MemoryType = Literal["episodic", "semantic", "entity", "relation"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]
KeyScope = Literal["read", "write", "admin"]


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


class ContextResponse(BaseModel):
    context: str
    items: list[MemoryOut]
    tokens: int = 0


class MemoryList(BaseModel):
    items: list[MemoryOut]
    next_cursor: str | None = None


class HistoryEventOut(BaseModel):
    op: str
    memory_id: UUID | None = None
    at: datetime
    actor: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    run_id: UUID | None = None  # the consolidation run that made the change


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


class JobOut(BaseModel):
    job_id: UUID
    status: JobStatus
    kind: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    user_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class JobList(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = None


class UserOut(BaseModel):
    """A user id of the tenant, with how many memories it has and when the latest was stored."""

    user_id: str
    memories: int
    last_created_at: datetime | None = None


class UserList(BaseModel):
    users: list[UserOut]
    next_cursor: str | None = None


class HistoryPage(BaseModel):
    """A user's history events, newest first (each names its memory)."""

    events: list[HistoryEventOut]
    next_cursor: str | None = None


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


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    code: str | None = None
    errors: list[dict[str, Any]] | None = None
