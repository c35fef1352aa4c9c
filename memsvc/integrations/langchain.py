"""memsvc for LangChain (`langchain-core`): a chat message history that memsvc remembers, and a
retriever over a user's long-term memory.

- `MemsvcChatMessageHistory`: one conversation (`session_id`) of one user, stored in memsvc; the
  messages it keeps are also extracted into facts, events and the user's graph, so what was said
  in one session is found in every later one.
- `MemsvcRetriever`: memsvc's hybrid, time-aware search as `Document`s, for any chain or agent.

A thin layer over `memsvc.client`; install with `pip install 'memsvc-client[langchain]'`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from memsvc.client import AsyncMemoryClient, MemoryClient, MemoryOut, NotFoundError
from memsvc.integrations import message_parts, stamped

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.documents import Document
    from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "memsvc's LangChain integration needs langchain-core: pip install 'memsvc-client[langchain]'"
    ) from exc

# LangChain message types -> memsvc roles; anything else keeps its own role if memsvc has it (`_role`). A
# tool's result is not kept: the call it answers has no text to keep, and a result read back
# without its call is a history a chat model refuses.
_ROLES = {"human": "user", "ai": "assistant", "system": "system"}
_MEMSVC_ROLES = frozenset(("user", "assistant", "system"))
_RESULT_ROLES = frozenset(("tool", "function"))  # a call's result, not something a person said
_PAGE = 500


class MemsvcChatMessageHistory(BaseChatMessageHistory):
    """The messages of one conversation of one user, kept in memsvc.

    `add_messages` stores them (waiting until they are stored, so `messages` sees them at once);
    `messages` reads the conversation back oldest first; `clear` deletes every memory made from
    it. Use it where LangChain takes a chat history, and `MemsvcRetriever` (or the client's
    `context()`) to bring back what other sessions said.
    """

    def __init__(
        self,
        user_id: str,
        session_id: str,
        *,
        client: MemoryClient | None = None,
        agent_id: str | None = None,
    ) -> None:
        # langchain-core marks this base class deprecated in favour of LangGraph's persistence;
        # it is still the interface LangChain's chat-history code takes, and the caller chose it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            super().__init__()
        self.client = client or MemoryClient()
        self.user_id = user_id
        self.session_id = session_id
        self.agent_id = agent_id

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The conversation's messages, oldest first."""
        turns = [m for m in self._session_memories("episodic") if m.kind == "turn"]
        turns.sort(key=lambda m: (m.event_at or m.created_at or datetime.min.replace(tzinfo=UTC), str(m.id)))
        return [_to_langchain(turn) for turn in turns]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store messages of the conversation (in one request, up to a thousand). Messages without
        text (an AI message that only calls tools) and tools' results are skipped; one longer than
        a message may be is stored in parts (ids "<id>", "<id>#2", …)."""
        batch: list[dict[str, Any]] = []
        for message in messages:
            if not message.text.strip() or _RESULT_ROLES & {message.type, getattr(message, "role", None)}:
                continue
            for n, part in enumerate(message_parts(message.text), start=1):
                item: dict[str, Any] = {"role": _role(message), "content": part}
                if message.name:
                    item["name"] = message.name
                if message.id:
                    item["id"] = message.id if n == 1 else f"{message.id}#{n}"
                batch.append(item)
        for add in stamped(batch, datetime.now(UTC)):
            self.client.add(add, self.user_id, session_id=self.session_id, agent_id=self.agent_id, wait=True)

    def clear(self) -> None:
        """Forget this conversation: its messages, and with them what only they said (a fact
        another session states too stays, citing that session's message only)."""
        for memory in [m for m in self._session_memories("episodic") if m.kind == "turn"]:
            # A turn takes its passages, the facts only it stated and (the session's last turn) the
            # digest with it; deleting a fact outright would take it from the sessions that state it.
            with contextlib.suppress(NotFoundError):
                self.client.delete(memory.id)

    def _session_memories(self, memory_type: str | None) -> Iterator[MemoryOut]:
        cursor = None
        while True:
            page = self.client.list(
                self.user_id, type=memory_type, limit=_PAGE, cursor=cursor, session_id=self.session_id
            )
            yield from page.items
            if not (cursor := page.next_cursor):
                return


class MemsvcRetriever(BaseRetriever):
    """A user's long-term memory as a LangChain retriever: memsvc's search, best first, each
    result a `Document` whose metadata holds its id, type, kind, score, times and sources."""

    client: MemoryClient
    async_client: AsyncMemoryClient | None = None
    user_id: str
    k: int = 10
    types: list[str] | None = None

    model_config = {"arbitrary_types_allowed": True}

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [_document(m) for m in self.client.search(query, self.user_id, limit=self.k, types=self.types)]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        if self.async_client is None:
            return await super()._aget_relevant_documents(query, run_manager=run_manager)
        hits = await self.async_client.search(query, self.user_id, limit=self.k, types=self.types)
        return [_document(m) for m in hits]


def _role(message: BaseMessage) -> str:
    """memsvc's role for a message: a generic ChatMessage's own role where memsvc has it ("user",
    "assistant", "system"), any other (a custom role) the user's."""
    role = _ROLES.get(message.type) or getattr(message, "role", "user")
    return role if role in _MEMSVC_ROLES else "user"


def _to_langchain(turn: MemoryOut) -> BaseMessage:
    ids = turn.source_message_ids
    fields: dict[str, Any] = {"content": turn.content, "id": ids[0] if ids else str(turn.id)}
    if turn.speaker and turn.speaker != turn.role:  # a message sent without a name has its role
        fields["name"] = turn.speaker
    if turn.role == "user":
        return HumanMessage(**fields)
    if turn.role == "assistant":
        return AIMessage(**fields)
    if turn.role == "system":
        return SystemMessage(**fields)
    return ChatMessage(role=turn.role or "tool", **fields)


def _document(memory: MemoryOut) -> Document:
    metadata = memory.model_dump(mode="json", exclude={"content"}, exclude_none=True)
    return Document(page_content=memory.content, metadata=metadata, id=str(memory.id))


__all__ = ["MemsvcChatMessageHistory", "MemsvcRetriever"]
