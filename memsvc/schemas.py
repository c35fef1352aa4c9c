"""What the v1 API accepts (requests, with the input rules), and, re-exported, what it answers.

The answers are defined once, in `memsvc.client.models`, which the SDK ships alone in the
`memsvc-client` distribution: server and SDK share one copy. Field names follow docs/API.md; they
are the contract and do not change within v1.
"""

from __future__ import annotations

import json
import math
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError

from memsvc.client.models import (
    AddResponse,
    AddResult,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyOut,
    ContextResponse,
    EntityOut,
    GraphResponse,
    HistoryEventOut,
    HistoryPage,
    HistoryResponse,
    JobList,
    JobOut,
    JobStatus,
    KeyScope,
    MemoryList,
    MemoryOut,
    MemoryType,
    Problem,
    RelationOut,
    SearchResponse,
    UserList,
    UserOut,
)

MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 64 * 1024
# The kinds a memory is stored as (`filters.kind`); an `excerpt` is made by search from turns.
MEMORY_KINDS = ("turn", "passage", "session", "fact", "preference", "plan", "event", "summary")


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


def _nfc(value: str) -> str:
    # One spelling per letter: macOS and iOS keyboards send "é" decomposed (e + U+0301), which the
    # extractor and keyword search would read as "e" and a stray mark. Server message ids hash the
    # content and name, so normalising before that hash also makes an NFD re-send of a message
    # the same message as its NFC send.
    return unicodedata.normalize("NFC", value)


def _visible(char: str) -> bool:
    # Format characters (category Cf: U+200B-U+200D, U+2060, U+FEFF, bidi marks, ...) show nothing.
    return not char.isspace() and unicodedata.category(char) != "Cf"


def _not_blank(value: str) -> str:
    if not any(_visible(char) for char in value):
        raise PydanticCustomError(
            "text_blank", "must not be blank (only whitespace or invisible format characters)"
        )
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


def storable_time(value: datetime) -> bool:
    """Whether an aware time's UTC year is 2-9998: one year of margin at both ends, so the date
    arithmetic of ingest and search never overflows ("0002-01-01T00:00+05:00" is year 1 in UTC)."""
    try:
        return 1 < value.astimezone(UTC).year < 9999
    except OverflowError:
        return False


def _utc_if_naive(value: datetime) -> datetime:
    aware = value if value.utcoffset() is not None else value.replace(tzinfo=UTC)
    if not storable_time(aware):
        raise PydanticCustomError("datetime_range", "year must be between 2 and 9998 (in UTC)")
    return aware


# Every client string passes `Text`: PostgreSQL stores neither NUL nor lone surrogates, and a
# request carrying one is the client's error (422 naming the field), not the server's (500).
Text = Annotated[str, AfterValidator(_check_text)]
# What people write (content, speaker names, queries, entity names) is compared by what it says, so
# it is NFC-normalised; ids and metadata are opaque and kept as sent (an id already stored stays
# reachable by the exact string it was stored under).
Prose = Annotated[Text, AfterValidator(_nfc)]
NonBlankProse = Annotated[Prose, AfterValidator(_not_blank)]
# Scope identifiers are opaque strings chosen by the client: any printable text, `/ ? # %` included.
ScopeId = Text


def _printable(value: str) -> str:
    if not value.isprintable() or not value.strip():
        raise PydanticCustomError("scope_id", "must be printable text, not blank (no control characters)")
    return value


# An id a write brings in is held to that; reads and erasure take any id, so that one stored before
# the rule can still be read and erased.
NewScopeId = Annotated[ScopeId, AfterValidator(_printable)]
# Client-chosen JSON (metadata, filters): at most 32 levels deep and 64 KiB, no NaN or Infinity.
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
# A time without a timezone is UTC, as API.md says; one with an offset keeps it.
UtcDatetime = Annotated[datetime, AfterValidator(_utc_if_naive)]
# Optional strings with bounds carry them before their validators: a bound given with the field
# (`X | None = Field(max_length=255)`) is checked after them, and pydantic words it as a list's
# ("Value should have at most 255 items after validation").
OptionalId = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(_check_text)]
OptionalNewScopeId = Annotated[OptionalId, AfterValidator(_printable)]
OptionalName = Annotated[
    str,
    StringConstraints(max_length=255),
    AfterValidator(_check_text),
    AfterValidator(_nfc),
    AfterValidator(_not_blank),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Model):
    """One conversation message as the client sends it."""

    role: Literal["user", "assistant", "system", "tool"]
    content: NonBlankProse = Field(min_length=1)
    name: OptionalName | None = Field(default=None, description="speaker's name, e.g. 'Caroline'")
    id: OptionalId | None = Field(default=None, description="client message id")
    created_at: UtcDatetime | None = Field(
        default=None, description="when it was said; without a timezone it is UTC; default: now"
    )


class AddRequest(_Model):
    messages: list[Message] = Field(min_length=1)
    user_id: NewScopeId = Field(min_length=1, max_length=255)
    agent_id: OptionalNewScopeId | None = None
    session_id: OptionalNewScopeId | None = None
    metadata: JsonObject | None = None
    wait: StrictBool = False  # JSON true or false: "yes" and 1 are no answer

    @field_validator("messages")
    @classmethod
    def _one_message_per_id(cls, value: list[Message]) -> list[Message]:
        # A message sent twice is one message; two messages under one id would store only one.
        said: dict[str, Message] = {}
        for message in value:
            if message.id is None:
                continue
            earlier = said.setdefault(message.id, message)
            if earlier != message:
                raise PydanticCustomError(
                    "message_id_reused",
                    "two different messages have the id {id}: a client message id names one message",
                    {"id": repr(message.id)},
                )
        return value


class SearchRequest(_Model):
    query: NonBlankProse = Field(min_length=1, max_length=4000)
    user_id: ScopeId = Field(min_length=1, max_length=255)
    limit: int = Field(default=10, ge=1, le=100)
    types: list[Literal["episodic", "semantic"]] | None = Field(default=None, min_length=1)
    as_of: UtcDatetime | None = Field(
        default=None, description="see the world as it was at this time; without a timezone it is UTC"
    )
    filters: JsonObject | None = Field(
        default=None, description="agent_id, session_id, kind, metadata (exact match of keys)"
    )
    explain: StrictBool = Field(
        default=False,
        description="put each result's score, signal by signal (dense, keyword, graph, time, ...), "
        "in its `metadata.explain`",
    )

    @field_validator("types", mode="before")
    @classmethod
    def _searchable_types(cls, value: Any) -> Any:
        # The graph is not ranked with memories; saying so beats an empty answer, or a list of
        # the memory types that offered "entity" and "relation" and then refused them.
        named = {v for v in value if isinstance(v, str)} if isinstance(value, list) else set()
        if not named <= {"episodic", "semantic"}:
            raise PydanticCustomError(
                "search_types",
                "search ranks 'episodic' and 'semantic' memories; entities and relations are at "
                "GET /v1/graph",
            )
        return value

    @field_validator("filters")
    @classmethod
    def _known_filters(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        allowed = {"agent_id", "session_id", "kind", "metadata"}
        if value is not None and (unknown := set(value) - allowed):
            raise ValueError(f"unknown filter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        kind = (value or {}).get("kind")
        # A kind no memory has would match nothing: an answer that looks like "no memories".
        if isinstance(kind, str) and kind not in MEMORY_KINDS:
            hint = " (an excerpt is made of turns: filter on 'turn')" if kind == "excerpt" else ""
            raise PydanticCustomError(
                "filter_kind",
                "unknown kind '{kind}'{hint}; allowed: {allowed}",
                {"kind": kind, "hint": hint, "allowed": ", ".join(MEMORY_KINDS)},
            )
        return value


class ContextRequest(_Model):
    query: NonBlankProse = Field(min_length=1, max_length=4000)
    user_id: ScopeId = Field(min_length=1, max_length=255)
    max_tokens: int = Field(default=1000, ge=50, le=32000)
    as_of: UtcDatetime | None = Field(default=None, description="without a timezone it is UTC")


class UpdateRequest(_Model):
    content: NonBlankProse | None = None
    metadata: JsonObject | None = None
    pinned: StrictBool | None = None


class ConsolidateRequest(_Model):
    user_id: OptionalId | None = None


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


__all__ = [
    "AddResponse",
    "AddResult",
    "ApiKeyCreated",
    "ApiKeyList",
    "ApiKeyOut",
    "ContextResponse",
    "EntityOut",
    "GraphResponse",
    "HistoryEventOut",
    "HistoryPage",
    "HistoryResponse",
    "JobList",
    "JobOut",
    "JobStatus",
    "KeyScope",
    "MemoryList",
    "MemoryOut",
    "MemoryType",
    "Problem",
    "RelationOut",
    "SearchResponse",
    "UserList",
    "UserOut",
    "storable_time",
]
