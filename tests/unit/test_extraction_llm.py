"""LLMExtractor against a real HTTP server on 127.0.0.1 that plays an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from memsvc.errors import InvalidInput
from memsvc.extraction import LLMExtractor, RulesExtractor, Turn, make_extractor
from tests.unit.fake_openai import FakeOpenAI, Reply

AT = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
TURNS = [
    Turn("m1", "user", "Caroline", "Hey Mel! Good to see you! How have you been?", AT),
    Turn("m2", "user", "Melanie", "Hey Caroline! I'm swamped with the kids & work.", AT),
    Turn("m3", "user", "Caroline", "I went to a LGBTQ support group yesterday and it was so powerful.", AT),
]

GOOD: dict[str, Any] = {
    "facts": [
        {
            "content": "Caroline went to an LGBTQ support group on 7 May 2023",
            "kind": "event",
            "subject": "Caroline",
            "source_message_ids": ["m3"],
            "valid_from": "2023-05-07",
            "confidence": 0.9,
            "importance": 1.7,  # out of range: clamped
        },
        {
            "content": "Melanie is swamped with the kids and work",
            "kind": "fact",
            "subject": "Melanie",
            "source_message_ids": ["m2"],
            "valid_from": None,
            "confidence": 0.8,
            "importance": 0.4,
        },
    ],
    "entities": [
        {"name": "Caroline", "type": "person", "source_message_ids": ["m1", "m3"], "aliases": []},
        {"name": "LGBTQ support group", "type": "organization", "source_message_ids": ["m3"], "aliases": []},
    ],
    "relations": [
        {
            "subject": "Caroline",
            "predicate": "Went To",
            "object": "LGBTQ support group",
            "fact": "Caroline went to an LGBTQ support group on 7 May 2023",
            "source_message_ids": ["m3"],
            "valid_from": "2023-05-07T00:00:00",
        }
    ],
}


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as s:
        yield s


def extractor(server: FakeOpenAI, **kw: Any) -> LLMExtractor:
    kw.setdefault("backoff_s", 0.01)
    return LLMExtractor(server.base_url, "test-model", api_key="sk-test", **kw)


def test_success_sends_model_schema_and_turns_and_converts_the_answer(server: FakeOpenAI) -> None:
    server.script(Reply(content=GOOD))
    result = extractor(server).extract(TURNS)

    assert len(server.requests) == 1
    req = server.requests[0]
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test"
    body = req.body
    assert body["model"] == "test-model"
    assert body["temperature"] == 0
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    schema = fmt["json_schema"]["schema"]
    assert fmt["json_schema"]["strict"] is True
    assert set(schema["required"]) == {"facts", "entities", "relations"}
    assert "source_message_ids" in schema["properties"]["facts"]["items"]["required"]
    system, user = body["messages"]
    assert system["role"] == "system" and "source_message_ids" in system["content"]
    for turn in TURNS:  # every turn, with its id, speaker and time
        line = next(x for x in user["content"].splitlines() if f'"{turn.message_id}"' in x)
        sent = json.loads(line)
        assert sent == {
            "message_id": turn.message_id,
            "speaker": turn.speaker,
            "role": "user",
            "time": AT.isoformat(),
            "text": turn.text,
        }

    assert result.extractor == "llm"
    assert result.notes == []
    event = result.facts[0]
    assert event.content == "Caroline went to an LGBTQ support group on 7 May 2023"
    assert event.kind == "event"
    assert event.source_message_ids == ("m3",)
    assert event.valid_from == datetime(2023, 5, 7, tzinfo=UTC)  # turn's timezone attached
    assert event.importance == 1.0 and event.confidence == 0.9
    assert result.facts[1].valid_from is None
    assert {e.name for e in result.entities} == {"Caroline", "LGBTQ support group"}
    (rel,) = result.relations
    assert (rel.subject, rel.predicate, rel.object) == ("Caroline", "went_to", "LGBTQ support group")
    assert rel.valid_from == datetime(2023, 5, 7, tzinfo=UTC)


def test_a_standing_instruction_keeps_the_requests_it_governs(server: FakeOpenAI) -> None:
    turns = [*TURNS, Turn("m4", "user", "Caroline", "Always cite sources when I ask about history.", AT)]
    answer = json.loads(json.dumps(GOOD))
    answer["facts"][1]["applies_to"] = "kids"  # on a plain fact it means nothing: dropped
    answer["facts"].append(
        {
            "content": "When Caroline asks about history: always cite sources.",
            "kind": "preference",
            "subject": "Caroline",
            "source_message_ids": ["m4"],
            "valid_from": None,
            "confidence": 0.9,
            "importance": 0.7,
            "applies_to": " history ",
        }
    )
    server.script(Reply(content=answer))
    result = extractor(server).extract(turns)
    schema = server.requests[0].body["response_format"]["json_schema"]["schema"]
    assert "applies_to" in schema["properties"]["facts"]["items"]["required"]
    assert "applies_to" in server.requests[0].body["messages"][0]["content"]
    assert [(f.source_message_ids, f.applies_to) for f in result.facts] == [
        (("m3",), None),
        (("m2",), None),
        (("m4",), "history"),
    ]


def test_hallucinated_message_ids_are_dropped(server: FakeOpenAI) -> None:
    answer = json.loads(json.dumps(GOOD))
    answer["facts"][1]["source_message_ids"] = ["m2", "m99"]  # one made-up id: the item goes
    answer["entities"][1]["source_message_ids"] = ["D1:3"]
    answer["relations"][0]["source_message_ids"] = []
    answer["facts"].append({"content": "x", "kind": "nonsense"})  # malformed item: dropped, rest kept
    server.script(Reply(content=answer))
    result = extractor(server).extract(TURNS)

    assert result.extractor == "llm"
    assert [f.source_message_ids for f in result.facts] == [("m3",)]
    assert [e.name for e in result.entities] == ["Caroline"]
    assert result.relations == []
    assert any("outside the batch" in n for n in result.notes)
    assert any("malformed" in n for n in result.notes)


def test_a_fact_quoting_a_credential_is_dropped(server: FakeOpenAI) -> None:
    answer = json.loads(json.dumps(GOOD))
    kept = [f["content"] for f in answer["facts"]]
    secret = {**answer["facts"][0], "content": "Caroline's database is postgres://admin:hunter2@db:5432/app"}
    answer["facts"].append(secret)
    server.script(Reply(content=answer))
    assert [f.content for f in extractor(server).extract(TURNS).facts] == kept


def test_relation_to_an_unlisted_entity_adds_that_entity(server: FakeOpenAI) -> None:
    answer = json.loads(json.dumps(GOOD))
    answer["entities"] = []
    server.script(Reply(content=answer))
    result = extractor(server).extract(TURNS)
    names = {e.name: e for e in result.entities}
    assert set(names) == {"Caroline", "LGBTQ support group"}
    assert names["LGBTQ support group"].source_message_ids == ("m3",)


def test_garbage_is_retried_then_falls_back_to_rules_with_a_note(server: FakeOpenAI) -> None:
    server.script(Reply(content="Sure! Here are the facts: Caroline went to..."))
    result = extractor(server, max_retries=2).extract(TURNS)

    assert len(server.requests) == 3  # first try and two retries
    assert result.extractor == "llm→rules"
    assert any("invalid response" in n and "3 attempt" in n for n in result.notes)
    # The fallback did real work: the rules extractor's fact about the support group is there.
    assert any("support group" in f.content and f.source_message_ids == ("m3",) for f in result.facts)


def test_fenced_json_is_accepted(server: FakeOpenAI) -> None:
    server.script(Reply(content="```json\n" + json.dumps(GOOD) + "\n```"))
    result = extractor(server).extract(TURNS)
    assert result.extractor == "llm"
    assert len(result.facts) == 2


def test_timeout_falls_back(server: FakeOpenAI) -> None:
    server.script(Reply(content=GOOD, delay_s=3.0))
    started = time.monotonic()
    result = extractor(server, timeout_s=0.2, max_retries=1).extract(TURNS)

    assert time.monotonic() - started < 2.5  # did not wait for the slow answers
    assert len(server.requests) == 2
    assert result.extractor == "llm→rules"
    assert any("timeout" in n for n in result.notes)


def test_server_error_is_retried_and_then_succeeds(server: FakeOpenAI) -> None:
    server.script(Reply(status=500), Reply(status=503), Reply(content=GOOD))
    result = extractor(server, max_retries=2).extract(TURNS)

    assert len(server.requests) == 3
    assert result.extractor == "llm"
    assert result.notes == []
    assert len(result.facts) == 2


def test_client_error_is_not_retried(server: FakeOpenAI) -> None:
    server.script(Reply(status=401))
    result = extractor(server, max_retries=2).extract(TURNS)
    assert len(server.requests) == 1
    assert result.extractor == "llm→rules"
    assert any("HTTP 401" in n for n in result.notes)


def test_unreachable_endpoint_falls_back() -> None:
    with FakeOpenAI() as s:
        url = s.base_url
    result = LLMExtractor(url, "m", max_retries=1, backoff_s=0.01, timeout_s=1).extract(TURNS)
    assert result.extractor == "llm→rules"
    assert any("connection error" in n for n in result.notes)


def test_make_extractor() -> None:
    assert isinstance(make_extractor("rules"), RulesExtractor)
    llm = make_extractor("llm", llm_base_url="http://127.0.0.1:9/v1/", llm_model="m", llm_max_retries=0)
    assert isinstance(llm, LLMExtractor)
    assert llm.url == "http://127.0.0.1:9/v1/chat/completions"
    assert llm.max_retries == 0
    with pytest.raises(InvalidInput):
        make_extractor("llm")
    with pytest.raises(InvalidInput):
        make_extractor("spacy")


# -- memory operations (ADD / UPDATE / DELETE / NOOP) ------------------------------------------

OPERATIONS = {
    "operations": [
        {"op": "NOOP", "fact": "f1", "memory": "m1", "content": None, "reason": "said before"},
        {"op": "ADD", "fact": "f2", "memory": None, "content": None, "reason": "new"},
    ]
}


def test_memory_operations_retry_with_growing_waits_then_succeed(server: FakeOpenAI) -> None:
    server.script(Reply(status=500), Reply(status=429), Reply(content=OPERATIONS))
    started = time.monotonic()
    ops = extractor(server, max_retries=2, backoff_s=0.1).propose_operations(
        ["Caroline went to a support group", "Melanie paints"], ["Caroline attended a support group"]
    )
    elapsed = time.monotonic() - started

    assert len(server.requests) == 3
    assert elapsed >= 0.1 + 0.2  # waited backoff_s, then twice that, before the second and third try
    assert ops is not None and [(o.op, o.fact, o.memory) for o in ops] == [("NOOP", 0, 0), ("ADD", 1, None)]
    assert server.requests[0].body["response_format"]["json_schema"]["name"] == "memory_operations"


def test_memory_operations_give_up_after_the_retries(server: FakeOpenAI) -> None:
    server.script(Reply(content="not json at all"))
    ops = extractor(server, max_retries=2).propose_operations(["a fact"], ["a memory"])
    assert ops is None  # the caller then adds every fact
    assert len(server.requests) == 3


def test_memory_operations_waits_are_bounded(server: FakeOpenAI) -> None:
    server.script(Reply(status=503))
    started = time.monotonic()
    ops = extractor(server, max_retries=3, backoff_s=30.0, max_backoff_s=0.05).propose_operations(
        ["a fact"], ["a memory"]
    )
    assert ops is None
    assert len(server.requests) == 4
    assert 0.15 <= time.monotonic() - started < 5.0  # three waits of at most max_backoff_s, not 30 s


def test_memory_operations_client_error_is_not_retried(server: FakeOpenAI) -> None:
    server.script(Reply(status=400))
    assert extractor(server, max_retries=2).propose_operations(["a fact"], ["a memory"]) is None
    assert len(server.requests) == 1
