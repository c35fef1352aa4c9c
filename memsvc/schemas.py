"""The public data shapes of the v1 API, shared by the server and the SDK (`memsvc.client`).

Field names follow `shared/API.md`; they are the contract and do not change within v1.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

MemoryType = Literal["episodic", "semantic", "entity", "relation"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]

MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 64 * 1024


def _escaped(text: str) -> str:
    """`text` safe to echo in an error: NUL, lone surrogates and other non-ASCII written as escapes."""
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _check_text(value: str, where: str = "") -> str:
    """Reject what PostgreSQL cannot store as text: NUL, and lone surrogates (not UTF-8)."""
    if "\x00" in value:
        raise PydanticCustomError(
            "text_nul", "{where}must not contain the NUL character (\\u0000)", {"where": where}
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            "text_surrogate",
            "{where}contains a lone surrogate ({char}) at position {position}: text must be valid Unicode",
            {"where": where, "char": _escaped(value[exc.start]), "position": exc.start},
        ) from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("text_blank", "must not be blank (only whitespace)")
    return value


def _check_json(value: Any, path: str, depth: int = 0) -> None:
    """What JSONB stores and gives back as sent: text as for `Text`, finite numbers, bounded depth.
    `path` is a JSON pointer, for the error message."""
    if depth > MAX_JSON_DEPTH:
        raise PydanticCustomError(
            "json_too_deep",
            "at {path}: nested deeper than {limit} levels",
            {"path": path, "limit": MAX_JSON_DEPTH},
        )
    if isinstance(value, str):
        _check_text(value, f"at {path}: ")
    elif isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError(
            "json_not_finite", "at {path}: NaN and Infinity are not JSON numbers", {"path": path}
        )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"a key at {path or '/'}: ")
            _check_json(item, f"{path}/{_escaped(key)}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}/{i}", depth + 1)


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    _check_json(value, "")
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_JSON_BYTES:
        raise PydanticCustomError(
            "json_too_large", "{size} bytes as JSON; at most {limit}", {"size": size, "limit": MAX_JSON_BYTES}
        )
    return value


def _utc_if_naive(value: datetime) -> datetime:
    # One year of margin at both ends, so the date arithmetic of ingest and search never overflows.
    if not 1 < value.year < 9999:
        raise PydanticCustomError("datetime_range", "year must be between 2 and 9998")
    return value if value.utcoffset() is not None else value.replace(tzinfo=UTC)


# Every client string passes `Text`: PostgreSQL stores neither NUL nor lone surrogates, and a
# request carrying one is the client's error (422 naming the field), not the server's (500).
Text = Annotated[str, AfterValidator(_check_text)]
NonBlankText = Annotated[Text, AfterValidator(_not_blank)]
# Scope identifiers are opaque strings chosen by the client: any printable text, `/ ? # %` included.
ScopeId = Text
# Client-chosen JSON (metadata, filters): at most 32 levels deep and 64 KiB, no NaN or Infinity.
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
# A time without a timezone is UTC, as API.md says; one with an offset keeps it.
UtcDatetime = Annotated[datetime, AfterValidator(_utc_if_naive)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Model):
    """One conversation message as the client sends it."""

    role: Literal["user", "assistant", "system", "tool"]
    content: NonBlankText = Field(min_length=1)
    name: Text | None = Field(default=None, max_length=255, description="speaker's name, e.g. 'Caroline'")
    id: Text | None = Field(default=None, min_length=1, max_length=255, description="client message id")
    created_at: UtcDatetime | None = Field(
        default=None, description="when it was said; without a timezone it is UTC; default: now"
    )


class AddRequest(_Model):
    messages: list[Message] = Field(min_length=1)
    user_id: ScopeId = Field(min_length=1, max_length=255)
    agent_id: ScopeId | None = Field(default=None, min_length=1, max_length=255)
    session_id: ScopeId | None = Field(default=None, min_length=1, max_length=255)
    metadata: JsonObject | None = None
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
    query: NonBlankText = Field(min_length=1, max_length=4000)
    user_id: ScopeId = Field(min_length=1, max_length=255)
    limit: int = Field(default=10, ge=1, le=100)
    types: list[MemoryType] | None = Field(default=None, min_length=1)
    as_of: UtcDatetime | None = Field(
        default=None, description="see the world as it was at this time; without a timezone it is UTC"
    )
    filters: JsonObject | None = Field(
        default=None, description="agent_id, session_id, kind, metadata (exact match of keys)"
    )
    explain: bool = Field(
        default=False,
        description="put each result's score, signal by signal (dense, keyword, graph, time, ...), "
        "in its `metadata.explain`",
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
    query: NonBlankText = Field(min_length=1, max_length=4000)
    user_id: ScopeId = Field(min_length=1, max_length=255)
    max_tokens: int = Field(default=1000, ge=50, le=32000)
    as_of: UtcDatetime | None = Field(default=None, description="without a timezone it is UTC")


class ContextResponse(BaseModel):
    context: str
    items: list[MemoryOut]
    tokens: int = 0


class MemoryList(BaseModel):
    items: list[MemoryOut]
    next_cursor: str | None = None


class UpdateRequest(_Model):
    content: NonBlankText | None = Field(default=None, min_length=1)
    metadata: JsonObject | None = None
    pinned: bool | None = None


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


class ConsolidateRequest(_Model):
    user_id: ScopeId | None = Field(default=None, min_length=1, max_length=255)


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
    name: Text = Field(default="", max_length=200)
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
