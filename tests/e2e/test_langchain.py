"""The LangChain adapter against a running memsvc: a chat history stores, reads back and clears a
conversation; the retriever finds, in a later session, what an earlier one said."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage

from memsvc.client import AsyncMemoryClient, MemoryClient
from memsvc.integrations.langchain import MemsvcChatMessageHistory, MemsvcRetriever


def test_chat_history_round_trip(client: MemoryClient) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the adapter keeps LangChain's quiet
        history = MemsvcChatMessageHistory("ann", "s1", client=client)
    other = MemsvcChatMessageHistory("ann", "s2", client=client)
    assert history.messages == []

    history.add_messages(
        [
            SystemMessage("You are a helpful assistant."),
            HumanMessage("I moved to Lisbon last month.", name="Ann", id="m1"),
            AIMessage("How do you like Lisbon?", id="m2"),
            HumanMessage("   "),  # nothing to remember
            # A tool call has no text, and its result is not kept without it.
            AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Lisbon"}, "id": "c1"}]),
            ToolMessage("21 °C and sunny", tool_call_id="c1"),
        ]
    )
    history.add_user_message("My cat Miso loves the balcony.")
    other.add_messages([HumanMessage("I play the cello on Sundays.", name="Ann")])

    messages = history.messages
    assert [type(m) for m in messages] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
    assert [m.text for m in messages] == [
        "You are a helpful assistant.",
        "I moved to Lisbon last month.",
        "How do you like Lisbon?",
        "My cat Miso loves the balcony.",
    ]
    assert messages[1].name == "Ann" and messages[1].id == "m1" and messages[2].id == "m2"
    # Sent without a name, a message reads back without one (not with its role as its name).
    assert (messages[0].name, messages[2].name, messages[3].name) == (None, None, None)
    assert [m.text for m in other.messages] == ["I play the cello on Sundays."]

    # Re-sending messages with ids stores nothing new.
    history.add_messages([HumanMessage("I moved to Lisbon last month.", name="Ann", id="m1")])
    assert len(history.messages) == 4

    history.clear()
    assert history.messages == []
    remaining = client.list("ann", limit=500).items
    assert remaining and {m.session_id for m in remaining} == {"s2"}
    assert "Lisbon" not in client.context("Where does Ann live?", "ann").context


def test_clearing_a_session_keeps_what_another_session_said_too(client: MemoryClient) -> None:
    a = MemsvcChatMessageHistory("cy", "a", client=client)
    b = MemsvcChatMessageHistory("cy", "b", client=client)
    a.add_messages([HumanMessage("I work as a pharmacist in Graz.", name="Cy")])
    b.add_messages([HumanMessage("I work as a pharmacist in Graz.", name="Cy"), AIMessage("Cool.")])
    # A custom role is the user's; a function's result, like a tool's, is not kept.
    b.add_messages([ChatMessage("I also teach yoga.", role="narrator"), ChatMessage("42", role="function")])
    assert [m.text for m in b.messages] == ["I work as a pharmacist in Graz.", "Cool.", "I also teach yoga."]
    a.clear()
    assert a.messages == [] and len(b.messages) == 3
    # The fact both sessions stated (one memory, first tagged with session a) stays, citing b's message.
    facts = [m for m in client.list("cy", type="semantic", limit=100).items if "pharmacist" in m.content]
    assert facts and all(m.source_message_ids and m.status == "active" for m in facts)
    assert "pharmacist" in client.context("What is Cy's job?", "cy").context


async def test_retriever_finds_what_another_session_said(live_server: str, tenant: Any) -> None:
    _, key = tenant
    with MemoryClient(live_server, key) as sync_client:
        MemsvcChatMessageHistory("bo", "monday", client=sync_client).add_messages(
            [HumanMessage("I adopted a greyhound called Pixel.", name="Bo", id="b1")]
        )
        retriever = MemsvcRetriever(client=sync_client, user_id="bo", k=3)
        docs = retriever.invoke("What is the name of Bo's dog?")
        assert docs and all(isinstance(d, Document) for d in docs) and len(docs) <= 3
        assert any("Pixel" in d.page_content for d in docs)
        top = docs[0].metadata
        assert top["score"] is not None and top["source_message_ids"] == ["b1"] and "id" in top

        only_facts = MemsvcRetriever(client=sync_client, user_id="bo", types=["semantic"]).invoke("dog")
        assert only_facts and {d.metadata["type"] for d in only_facts} == {"semantic"}
        assert MemsvcRetriever(client=sync_client, user_id="nobody").invoke("dog") == []

        async with AsyncMemoryClient(live_server, key) as async_client:
            both = MemsvcRetriever(client=sync_client, async_client=async_client, user_id="bo", k=3)
            async_docs = await both.ainvoke("What is the name of Bo's dog?")
        assert [d.page_content for d in async_docs] == [d.page_content for d in docs]


def test_import_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "langchain_core.chat_history", None)
    monkeypatch.delitem(sys.modules, "memsvc.integrations.langchain")
    with pytest.raises(ImportError, match=r"pip install 'memsvc-client\[langchain\]'"):
        importlib.import_module("memsvc.integrations.langchain")
