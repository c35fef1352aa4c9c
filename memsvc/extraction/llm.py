"""The LLM extractor: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp).

One request per batch, with a strict JSON schema as `response_format` and temperature 0. The answer
is validated item by item; items that cite message ids outside the batch are dropped, since
provenance is what search results are judged by. When the endpoint fails (HTTP error, timeout,
unparseable answer) the request is retried a few times with a short backoff, then the batch goes
to `RulesExtractor`, so ingest never stops because a model server is down.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dtime
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memsvc.extraction.base import (
    SECRET,
    ExtractedEntity,
    ExtractedFact,
    ExtractedRelation,
    Extraction,
    Extractor,
    Turn,
)
from memsvc.extraction.rules import RulesExtractor

__all__ = [
    "OPERATIONS_PROMPT",
    "SYSTEM_PROMPT",
    "LLMExtractor",
    "MemoryOperation",
    "operations_schema",
    "response_schema",
]

log = logging.getLogger(__name__)

SYSTEM_PROMPT = """\
You extract long-term memories from a conversation for a memory service.

You get the conversation's turns as JSON lines, each with its message_id, speaker, time and text.
Return JSON that matches the given schema:
- facts: self-contained statements about the people in the conversation, in the third person with \
names resolved ("I went to a support group yesterday" said by Caroline on 8 May 2023 becomes \
"Caroline went to a support group on 7 May 2023"). Resolve relative dates against the time of the \
turn that says them and write absolute dates. Questions, greetings and small talk state no fact. \
kind is "preference" (likes, dislikes, favourites), "plan" (intentions, future events), "event" \
(something that happened) or "fact" (anything else). subject is the person the fact is about. \
valid_from is when it happened or became true (ISO 8601 date), or null. A standing instruction \
to the assistant for some kind of request ("Always include version numbers when I ask about \
libraries") is a "preference" stated as "When <speaker> asks about libraries: always include \
version numbers.", with applies_to naming those requests ("libraries"); applies_to is null for \
every other fact.
- entities: people, places, organizations, things and events mentioned, with a canonical name and \
any aliases used in the text.
- relations: (subject, predicate, object) triples between entity names, with a short snake_case \
predicate ("went_to", "works_at", "likes") and the sentence that states it.
Every item lists source_message_ids: exactly the message_ids of the turns that state it (usually \
one; two when an answer only makes sense with its question). Never cite a message_id that is not \
in the input, and never cite a whole conversation.
confidence and importance are between 0 and 1.
"""

_Kind = Literal["fact", "preference", "plan", "event"]
_EntityKind = Literal["person", "place", "organization", "thing", "event", "other"]
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class _Fact(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str = Field(min_length=1)
    kind: _Kind
    subject: str = Field(min_length=1)
    source_message_ids: list[str] = Field(min_length=1)
    valid_from: str | None = None
    confidence: float = 0.7
    importance: float = 0.5
    applies_to: str | None = None


class _Entity(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)
    type: _EntityKind
    source_message_ids: list[str] = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)


class _Relation(BaseModel):
    model_config = ConfigDict(extra="ignore")
    subject: str = Field(min_length=1)
    predicate: str = Field(min_length=1)
    object: str = Field(min_length=1)
    fact: str = Field(min_length=1)
    source_message_ids: list[str] = Field(min_length=1)
    valid_from: str | None = None


class _Answer(BaseModel):
    # Items are validated one by one below, so one malformed item does not cost the whole answer.
    model_config = ConfigDict(extra="ignore")
    facts: list[Any]
    entities: list[Any] = Field(default_factory=list)
    relations: list[Any] = Field(default_factory=list)


class _Unusable(Exception):
    """The endpoint answered, but not with something we can use. `retry` says whether to try again."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


class _Failed(Exception):
    """Every try failed (or one that is not worth repeating): the last reason and how many tries."""

    def __init__(self, reason: str, attempts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


_T = TypeVar("_T")


def response_schema() -> dict[str, Any]:
    """The JSON schema sent as `response_format` (OpenAI strict mode: every field required, no extras)."""
    ids = {"type": "array", "items": {"type": "string"}}
    nullable_date = {"type": ["string", "null"], "description": "ISO 8601 date, or null"}

    def obj(properties: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    fact = obj(
        {
            "content": {"type": "string"},
            "kind": {"type": "string", "enum": ["fact", "preference", "plan", "event"]},
            "subject": {"type": "string"},
            "source_message_ids": ids,
            "valid_from": nullable_date,
            "confidence": {"type": "number"},
            "importance": {"type": "number"},
            "applies_to": {"type": ["string", "null"], "description": "a standing instruction's requests"},
        }
    )
    entity = obj(
        {
            "name": {"type": "string"},
            "type": {
                "type": "string",
                "enum": ["person", "place", "organization", "thing", "event", "other"],
            },
            "source_message_ids": ids,
            "aliases": {"type": "array", "items": {"type": "string"}},
        }
    )
    relation = obj(
        {
            "subject": {"type": "string"},
            "predicate": {"type": "string"},
            "object": {"type": "string"},
            "fact": {"type": "string"},
            "source_message_ids": ids,
            "valid_from": nullable_date,
        }
    )
    return obj(
        {
            "facts": {"type": "array", "items": fact},
            "entities": {"type": "array", "items": entity},
            "relations": {"type": "array", "items": relation},
        }
    )


OPERATIONS_PROMPT = """\
You keep a person's long-term memory up to date. You get memories already stored, each with a key \
("m1", "m2", ...), and facts just extracted from new messages, each with a key ("f1", "f2", ...). \
For every new fact choose one operation:
- ADD: it is new information; it is stored as it is.
- UPDATE: it adds to or corrects a stored memory about the same thing; give that memory's key and \
the memory's new wording in content, one self-contained sentence that keeps what is still true.
- DELETE: it shows a stored memory is wrong (not merely out of date: a change over time is an ADD, \
history is kept); give that memory's key. The new fact is stored.
- NOOP: a stored memory already says the same; nothing changes.
Return JSON matching the schema, one operation per new fact; memory and content are null when \
unused.
"""


@dataclass(frozen=True, slots=True)
class MemoryOperation:
    """What the model proposes for a new fact: `fact` and `memory` index the lists it was given."""

    op: Literal["ADD", "UPDATE", "DELETE", "NOOP"]
    fact: int
    memory: int | None = None
    content: str | None = None
    reason: str = ""


class _Operation(BaseModel):
    model_config = ConfigDict(extra="ignore")
    fact: str
    op: Literal["ADD", "UPDATE", "DELETE", "NOOP"]
    memory: str | None = None
    content: str | None = None
    reason: str = ""


def operations_schema() -> dict[str, Any]:
    """The JSON schema of an answer to `OPERATIONS_PROMPT` (OpenAI strict mode)."""
    operation = {
        "type": "object",
        "properties": {
            "fact": {"type": "string"},
            "op": {"type": "string", "enum": ["ADD", "UPDATE", "DELETE", "NOOP"]},
            "memory": {"type": ["string", "null"]},
            "content": {"type": ["string", "null"]},
            "reason": {"type": "string"},
        },
        "required": ["fact", "op", "memory", "content", "reason"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"operations": {"type": "array", "items": operation}},
        "required": ["operations"],
        "additionalProperties": False,
    }


class LLMExtractor:
    """Extracts with a chat-completions model; falls back to `RulesExtractor` when the model fails."""

    name = "llm"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        max_backoff_s: float = 5.0,
        fallback: Extractor | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.max_retries = max(0, max_retries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.fallback: Extractor = fallback or RulesExtractor()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers)
        self._schema = response_schema()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def extract(self, turns: Sequence[Turn], *, known_people: Collection[str] = ()) -> Extraction:
        """Extract with the model; on repeated failure, extract with the fallback and say why in `notes`."""
        if not turns:
            return Extraction(extractor=self.name)
        body = self.request_body(turns)
        try:
            return self._with_retries(lambda: self._convert(self._call(body), turns))
        except _Failed as e:
            reason, attempts = e.reason, e.attempts
        log.warning(
            "LLM extraction failed after %d attempt(s): %s; using %s", attempts, reason, self.fallback.name
        )
        result = self.fallback.extract(turns, known_people=known_people)
        result.extractor = f"{self.name}→{self.fallback.name}"
        result.notes.append(f"llm extraction failed after {attempts} attempt(s): {reason}")
        return result

    def request_body(self, turns: Sequence[Turn]) -> dict[str, Any]:
        """The chat-completions request for a batch (public so tests and debugging can see it)."""
        speakers = ", ".join(dict.fromkeys(t.speaker for t in turns))
        lines = "\n".join(
            json.dumps(
                {
                    "message_id": t.message_id,
                    "speaker": t.speaker,
                    "role": t.role,
                    "time": t.event_at.isoformat(),
                    "text": t.text,
                },
                ensure_ascii=False,
            )
            for t in turns
        )
        return self._chat_body(
            SYSTEM_PROMPT, f"Participants: {speakers}\nTurns:\n{lines}", "memory_extraction", self._schema
        )

    def _chat_body(self, system: str, user: str, schema_name: str, schema: dict[str, Any]) -> dict[str, Any]:
        """A deterministic chat completion whose answer must follow `schema` (structured output)."""
        return {
            "model": self.model,
            "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "strict": True, "schema": schema},
            },
        }

    def propose_operations(
        self, new_facts: Sequence[str], known: Sequence[str]
    ) -> list[MemoryOperation] | None:
        """ADD / UPDATE / DELETE / NOOP for each new fact against the stored memories it was
        retrieved with (Mem0's and Memory-R1's update step). Operations that name a key outside the
        lists, or an UPDATE without content, are dropped (the fact is then added as it is). None when
        the endpoint fails: the caller adds every fact, as without an LLM."""
        if not new_facts or not known:
            return []
        listing = "\n".join(
            [*(f"m{i + 1}: {text}" for i, text in enumerate(known)), ""]
            + [f"f{i + 1}: {text}" for i, text in enumerate(new_facts)]
        )
        body = self._chat_body(
            OPERATIONS_PROMPT,
            f"Stored memories and new facts:\n{listing}",
            "memory_operations",
            operations_schema(),
        )

        def operations() -> list[Any]:
            raw = self._post(body)
            try:
                items = json.loads(raw).get("operations")
            except (ValueError, AttributeError) as e:
                raise _Unusable(f"unreadable ({type(e).__name__}: {str(e)[:200]})", retry=True) from e
            if not isinstance(items, list):
                raise _Unusable("no operations list", retry=True)
            return items

        try:
            items = self._with_retries(operations)
        except _Failed as e:
            log.warning(
                "LLM memory operations failed after %d attempt(s): %s; every fact is added",
                e.attempts,
                e.reason,
            )
            return None
        out: list[MemoryOperation] = []
        seen: set[int] = set()
        for item in items:
            try:
                o = _Operation.model_validate(item)
            except ValidationError:
                continue
            fact = _key_index(o.fact, "f", len(new_facts))
            memory = _key_index(o.memory, "m", len(known))
            if fact is None or fact in seen:
                continue
            if o.op in ("UPDATE", "DELETE", "NOOP") and memory is None:
                continue
            if o.op == "UPDATE" and not (o.content or "").strip():
                continue
            seen.add(fact)
            content = (o.content or "").strip() or None
            out.append(MemoryOperation(o.op, fact, memory, content, o.reason[:300]))
        return out

    def _with_retries(self, attempt: Callable[[], _T]) -> _T:
        """`attempt()`, tried again after a failure worth retrying (timeout, connection error, 429,
        5xx, an answer we cannot read) at most `max_retries` times, waiting `backoff_s` × 2^n
        between tries, never more than `max_backoff_s`: a model server that is down or overloaded
        is given time to recover instead of a burst of requests. Raises `_Failed` at the end."""
        for n in range(self.max_retries + 1):
            try:
                return attempt()
            except _Unusable as e:
                if not e.retry or n == self.max_retries:
                    raise _Failed(str(e), n + 1) from e
            time.sleep(min(self.backoff_s * 2**n, self.max_backoff_s))
        raise AssertionError("unreachable")  # the last try returns or raises

    def _post(self, body: dict[str, Any]) -> str:
        """POST a chat completion; the assistant's content, fences stripped."""
        try:
            response = self._client.post(self.url, json=body)
        except httpx.TimeoutException as e:
            raise _Unusable(f"timeout ({type(e).__name__})", retry=True) from e
        except httpx.TransportError as e:
            raise _Unusable(f"connection error ({type(e).__name__}: {e})", retry=True) from e
        if response.status_code >= 400:
            # A 400 or 401 will not get better by asking again; overload and server errors may.
            raise _Unusable(
                f"HTTP {response.status_code}: {response.text[:200]}",
                retry=response.status_code in _RETRY_STATUS,
            )
        try:
            message = response.json()["choices"][0]["message"]
            refusal = message.get("refusal")
            content = "" if refusal else _strip_fences(message["content"])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise _Unusable(f"invalid response ({type(e).__name__}: {str(e)[:200]})", retry=True) from e
        if refusal:
            raise _Unusable(f"model refused: {str(refusal)[:200]}", retry=False)
        return content

    def _call(self, body: dict[str, Any]) -> _Answer:
        """The extraction a chat completion answers."""
        content = self._post(body)
        try:
            return _Answer.model_validate_json(content)
        except ValueError as e:
            # ValidationError is a ValueError: wrong shape and invalid JSON both land here.
            raise _Unusable(f"invalid response ({type(e).__name__}: {str(e)[:200]})", retry=True) from e

    def _convert(self, answer: _Answer, turns: Sequence[Turn]) -> Extraction:
        known = {t.message_id: t for t in turns}
        dropped_ids = dropped_invalid = 0
        out = Extraction(extractor=self.name)

        def valid_ids(ids: list[str]) -> tuple[str, ...] | None:
            nonlocal dropped_ids
            cleaned = tuple(dict.fromkeys(i.strip() for i in ids))
            if not cleaned or any(i not in known for i in cleaned):
                dropped_ids += 1  # a made-up id means the item's provenance cannot be trusted
                return None
            return cleaned

        for raw in answer.facts:
            try:
                f = _Fact.model_validate(raw)
            except ValidationError:
                dropped_invalid += 1
                continue
            ids = valid_ids(f.source_message_ids)
            if ids is None or SECRET.search(f.content):
                continue  # a credential stays in its message, out of every context (`SECRET`)
            out.facts.append(
                ExtractedFact(
                    content=f.content.strip(),
                    kind=f.kind,
                    subject=f.subject.strip(),
                    source_message_ids=ids,
                    valid_from=_parse_when(f.valid_from, known[ids[0]].event_at),
                    confidence=_unit(f.confidence),
                    importance=_unit(f.importance),
                    applies_to=(f.applies_to or "").strip() or None if f.kind == "preference" else None,
                )
            )
        names: dict[str, ExtractedEntity] = {}
        for raw in answer.entities:
            try:
                e = _Entity.model_validate(raw)
            except ValidationError:
                dropped_invalid += 1
                continue
            ids = valid_ids(e.source_message_ids)
            if ids is None:
                continue
            entity = ExtractedEntity(
                name=e.name.strip(),
                type=e.type,
                source_message_ids=ids,
                aliases=tuple(a.strip() for a in e.aliases if a.strip() and a.strip() != e.name.strip()),
            )
            names.setdefault(entity.name.lower(), entity)
        for raw in answer.relations:
            try:
                r = _Relation.model_validate(raw)
            except ValidationError:
                dropped_invalid += 1
                continue
            ids = valid_ids(r.source_message_ids)
            if ids is None:
                continue
            subject, obj = r.subject.strip(), r.object.strip()
            # Relations name entities; one the model forgot to list is added so the graph stays whole.
            for name in (subject, obj):
                names.setdefault(
                    name.lower(), ExtractedEntity(name=name, type="other", source_message_ids=ids)
                )
            out.relations.append(
                ExtractedRelation(
                    subject=names[subject.lower()].name,
                    predicate=_snake(r.predicate),
                    object=names[obj.lower()].name,
                    fact=r.fact.strip(),
                    source_message_ids=ids,
                    valid_from=_parse_when(r.valid_from, known[ids[0]].event_at),
                )
            )
        out.entities = list(names.values())
        if dropped_ids:
            out.notes.append(f"dropped {dropped_ids} item(s) citing message ids outside the batch")
        if dropped_invalid:
            out.notes.append(f"dropped {dropped_invalid} malformed item(s)")
        return out


def _strip_fences(content: Any) -> str:
    # Servers without structured output (some Ollama and llama.cpp builds) wrap JSON in ``` fences.
    if not isinstance(content, str):
        raise TypeError(f"message content is {type(content).__name__}, not a string")
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text


def _parse_when(value: str | None, at: datetime) -> datetime | None:
    """An ISO date or datetime from the model, in the turn's timezone when it has none; None if unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value.strip()[:10]), dtime(0))
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=at.tzinfo)


def _key_index(key: str | None, prefix: str, size: int) -> int | None:
    """ "m3" → 2 when there are at least 3 memories; None otherwise."""
    key = (key or "").strip().lower()
    if not key.startswith(prefix) or not key[1:].isdigit():
        return None
    index = int(key[1:]) - 1
    return index if 0 <= index < size else None


def _unit(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def _snake(predicate: str) -> str:
    return "_".join(predicate.strip().lower().replace("-", " ").split()) or "related_to"
