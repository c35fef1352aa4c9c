"""The LlamaIndex memory block against a running memsvc: alone (aput, then aget answers from what
was stored) and inside LlamaIndex's own `Memory`, which hands it the messages its short-term window
lets go and puts its context in the prompt."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.memory import Memory

from memsvc.client import AsyncMemoryClient, MemoryClient
from memsvc.integrations.llamaindex import MemsvcMemoryBlock


async def test_block_stores_and_recalls(live_server: str, tenant: Any) -> None:
    _, key = tenant
    async with AsyncMemoryClient(live_server, key) as client:
        block = MemsvcMemoryBlock(client=client, user_id="ann", session_id="s1", max_tokens=300)
        assert await block.aget([ChatMessage(role=MessageRole.USER, content="Where does Ann live?")]) == ""
        await block.aput(
            [
                ChatMessage(role=MessageRole.USER, content="I moved to Lisbon last month."),
                ChatMessage(role=MessageRole.ASSISTANT, content="How do you like Lisbon?"),
                ChatMessage(role=MessageRole.TOOL, content=""),  # nothing to remember
            ]
        )
        assert await block.aget([]) == ""  # no question, no query
        context = await block.aget(
            [
                ChatMessage(role=MessageRole.ASSISTANT, content="Hello again!"),
                ChatMessage(role=MessageRole.USER, content="Which city do I live in now?"),
            ]
        )
        assert "Lisbon" in context

        # "Yes." said again in a later flush is said again, not a re-send.
        await block.aput([ChatMessage(role=MessageRole.USER, content="Yes.")])
        await block.aput([ChatMessage(role=MessageRole.USER, content="Yes.")])

    with MemoryClient(live_server, key) as sync_client:
        turns = [m for m in sync_client.list("ann").items if m.kind == "turn"]
        assert sorted((m.role, m.session_id) for m in turns) == [
            ("assistant", "s1"),
            ("user", "s1"),
            ("user", "s1"),
            ("user", "s1"),
        ]


async def test_a_pasted_document_is_stored_in_parts_and_asks_with_its_end(
    live_server: str, tenant: Any
) -> None:
    _, key = tenant
    document = " ".join(f"word{i}" for i in range(6000)) + " I moved to Porto."  # ~45,000 characters
    async with AsyncMemoryClient(live_server, key) as client:
        block = MemsvcMemoryBlock(client=client, user_id="doc", session_id="d1")
        # Refused whole (422), it had taken the short message beside it down too.
        await block.aput(
            [
                ChatMessage(role=MessageRole.USER, content="short one"),
                ChatMessage(role=MessageRole.USER, content=document),
            ]
        )
        asked = document + " Where do I live now?"
        assert "Porto" in await block.aget([ChatMessage(role=MessageRole.USER, content=asked)])
    with MemoryClient(live_server, key) as sync_client:
        turns = sorted(
            (m for m in sync_client.list("doc", limit=500).items if m.kind == "turn"),
            key=lambda m: m.event_at,
        )
        assert len(turns) == 3 and turns[0].content == "short one"
        assert " ".join(t.content for t in turns[1:]) == document


async def test_inside_llamaindex_memory(live_server: str, tenant: Any) -> None:
    _, key = tenant
    async with AsyncMemoryClient(live_server, key) as client:
        block = MemsvcMemoryBlock(client=client, user_id="bo", max_tokens=300)
        memory = Memory.from_defaults(
            session_id="chat-1",
            token_limit=40,
            token_flush_size=20,
            chat_history_token_ratio=0.5,
            tokenizer_fn=str.split,  # no tokenizer download
            memory_blocks=[block],
        )
        said = [
            "My sister Carla is a pilot for a small airline.",
            "Nice! Does she fly long routes?",
            "Mostly short hops between the islands, she loves it.",
            "That sounds like a great job.",
            "By the way I am planning a trip to Kyoto in April.",
            "Kyoto in April is beautiful with the cherry blossoms.",
        ]
        for i, text in enumerate(said):
            role = MessageRole.USER if i % 2 == 0 else MessageRole.ASSISTANT
            await memory.aput(ChatMessage(role=role, content=text))
        await memory.aput(ChatMessage(role=MessageRole.USER, content="What does my sister do for work?"))
        prompt = await memory.aget()

    with MemoryClient(live_server, key) as sync_client:
        stored = [m for m in sync_client.list("bo").items if m.kind == "turn"]
    # The flushed (oldest) messages went to memsvc, in the Memory's session.
    assert any("pilot" in m.content for m in stored)
    assert {m.session_id for m in stored} == {"chat-1"}
    # ...and came back in the prompt as long-term memory, though no longer in the short-term window.
    system = "\n".join(m.content or "" for m in prompt if m.role == MessageRole.SYSTEM)
    assert "<memsvc>" in system and "pilot" in system
    window = [m.content for m in prompt if m.role != MessageRole.SYSTEM]
    assert "My sister Carla is a pilot for a small airline." not in window


def test_import_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setitem(sys.modules, "llama_index.core.memory.memory", None)
    monkeypatch.delitem(sys.modules, "memsvc.integrations.llamaindex")
    with pytest.raises(ImportError, match=r"pip install 'memsvc-client\[llamaindex\]'"):
        importlib.import_module("memsvc.integrations.llamaindex")
