"""An entity's sources are exactly the messages that name it, with either extractor, as stored and
as the graph API shows them (real PostgreSQL, real embedding model; the LLM is a scripted HTTP
server, the same one the extractor's unit tests talk to)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from memsvc.extraction import LLMExtractor
from memsvc.ingest import Ingestor
from memsvc.schemas import AddRequest, Message
from tests.unit.fake_openai import FakeOpenAI, Reply

START = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
LINES = [
    ("Caroline", "I went to a LGBTQ support group yesterday and it was so powerful."),
    ("Melanie", "That's great, Caroline! I painted a lake sunrise last year."),
    ("Caroline", "Wow. Did you paint it at Lake Tahoe?"),
    ("Melanie", "Yes, the lake was calm."),
]


def _request(user: str) -> AddRequest:
    return AddRequest(
        user_id=user,
        session_id="s1",
        messages=[
            Message(role="user", name=name, content=text, id=f"m{i}", created_at=START + timedelta(minutes=i))
            for i, (name, text) in enumerate(LINES, 1)
        ],
    )


def _sources(service, ctx, user: str) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    graph = service.graph(ctx, user, entity=None, depth=1)
    return {e.name: sorted(e.source_message_ids) for e in graph.entities}


def test_rules_extractor_entities_cite_the_messages_that_name_them(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"es-{uuid.uuid4().hex[:6]}"
    outcome = service.run_ingest_job(service.submit_ingest(ctx, _request(user)))
    assert outcome.status == "succeeded", outcome.error
    sources = _sources(service, ctx, user)
    # Caroline's facts come from m1 and m3, but only m2 names her; no message names Melanie.
    assert sources["Caroline"] == ["m2"]
    assert sources.get("Melanie", []) == []
    assert sources["Lake Tahoe"] == ["m3"]


def test_llm_extractor_sources_are_corrected_to_the_naming_messages(
    database, embedder, service, tenant
) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"es-{uuid.uuid4().hex[:6]}"
    answer = {
        "facts": [],
        # As a model might cite: every message of the batch, or the message a fact came from.
        "entities": [
            {
                "name": "Caroline",
                "type": "person",
                "source_message_ids": ["m1", "m2", "m3", "m4"],
                "aliases": [],
            },
            {"name": "Lake Tahoe", "type": "place", "source_message_ids": ["m3", "m4"], "aliases": []},
            {"name": "support group", "type": "organization", "source_message_ids": ["m2"], "aliases": []},
        ],
        "relations": [],
    }
    with FakeOpenAI() as server:
        server.script(Reply(content=answer))
        ingestor = Ingestor(embedder, LLMExtractor(server.base_url, "test-model", api_key="sk-test"))
        with database.session() as session:
            result = ingestor.ingest(session, ctx.tenant_id, _request(user), START, "test")
    assert result.extractor == "llm"
    sources = _sources(service, ctx, user)
    assert sources["Caroline"] == ["m2"]
    assert sources["Lake Tahoe"] == ["m3"]
    assert sources["support group"] == ["m1"]
