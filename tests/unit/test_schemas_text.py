"""The text rules of the request schemas: prose is NFC-normalised, ids are kept as sent, and text
with nothing visible is blank."""

from __future__ import annotations

import unicodedata

import pytest
from pydantic import ValidationError

from memsvc.schemas import AddRequest, SearchRequest, UpdateRequest

NFC = "Renée met me at Café Zürich in Malmö."
NFD = unicodedata.normalize("NFD", NFC)


def test_decomposed_content_names_and_queries_become_nfc() -> None:
    assert NFD != NFC
    request = AddRequest.model_validate(
        {"user_id": "u", "messages": [{"role": "user", "name": "Ren" + "e\u0301e", "content": NFD}]}
    )
    assert request.messages[0].content == NFC
    assert request.messages[0].name == "Renée"
    assert SearchRequest(query=NFD, user_id="u").query == NFC
    assert UpdateRequest(content=NFD).content == NFC


def test_ids_and_metadata_are_kept_as_sent() -> None:
    # Opaque: normalising them would make an id stored before unreachable by the string it has.
    request = AddRequest.model_validate(
        {
            "user_id": NFD,
            "session_id": NFD,
            "metadata": {NFD: NFD},
            "messages": [{"role": "user", "id": NFD, "content": "hi"}],
        }
    )
    assert request.user_id == NFD and request.session_id == NFD
    assert request.metadata == {NFD: NFD}
    assert request.messages[0].id == NFD


def test_an_nfd_and_an_nfc_copy_under_one_id_are_one_message() -> None:
    request = AddRequest.model_validate(
        {
            "user_id": "u",
            "messages": [{"role": "user", "id": "m1", "content": c} for c in (NFD, NFC)],
        }
    )
    assert request.messages[0] == request.messages[1]


@pytest.mark.parametrize("invisible", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", " \u200b\n\ufeff "])
def test_content_or_query_with_nothing_visible_is_blank(invisible: str) -> None:
    with pytest.raises(ValidationError, match="blank") as raised:
        AddRequest.model_validate({"user_id": "u", "messages": [{"role": "user", "content": invisible}]})
    assert raised.value.errors()[0]["loc"] == ("messages", 0, "content")
    with pytest.raises(ValidationError, match="blank"):
        SearchRequest(query=invisible, user_id="u")
    with pytest.raises(ValidationError, match="blank"):
        UpdateRequest(content=invisible)
    with pytest.raises(ValidationError, match="blank") as raised:
        AddRequest.model_validate(
            {"user_id": "u", "messages": [{"role": "user", "content": "hi", "name": invisible}]}
        )
    assert raised.value.errors()[0]["loc"] == ("messages", 0, "name")


def test_visible_text_around_invisible_characters_is_kept() -> None:
    text = "co\u200bop \ufeffhi"
    request = AddRequest.model_validate({"user_id": "u", "messages": [{"role": "user", "content": text}]})
    assert request.messages[0].content == text


@pytest.mark.parametrize("types", [["graph"], ["entity"], ["semantic", "relation"]])
def test_search_types_other_than_memories_name_the_graph_route(types: list[str]) -> None:
    # "graph" was refused with a list offering "entity" and "relation", which were then refused too.
    with pytest.raises(ValidationError) as refused:
        SearchRequest(query="x", user_id="u", types=types)
    (error,) = refused.value.errors()
    assert "GET /v1/graph" in error["msg"] and "'episodic' and 'semantic'" in error["msg"]


def test_an_optional_string_s_bound_is_worded_as_a_string_s() -> None:
    from memsvc.schemas import ConsolidateRequest

    with pytest.raises(ValidationError) as caught:
        AddRequest(
            user_id="u",
            session_id="x" * 256,
            agent_id="a" * 256,
            messages=[{"role": "user", "content": "hi", "name": "y" * 256, "id": ""}],  # type: ignore[list-item]
        )
    messages = [e["msg"] for e in caught.value.errors()]
    assert len(messages) == 4 and not any("items" in m for m in messages), messages  # "at most 255 items"
    assert "String should have at most 255 characters" in messages
    with pytest.raises(ValidationError) as caught:
        ConsolidateRequest(user_id="u" * 256)
    assert caught.value.errors()[0]["type"] == "string_too_long"
