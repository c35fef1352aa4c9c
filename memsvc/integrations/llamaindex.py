"""memsvc as a LlamaIndex memory block (`llama-index-core`): long-term memory for a `Memory`.

`Memory` hands a block the messages that leave its short-term window (`aput`) and asks it for
text to put in the prompt (`aget`, with the recent messages). `MemsvcMemoryBlock` stores the
former in memsvc and answers the latter with memsvc's context for the latest user message:
facts, the dated events they come from, and the people and places involved.

A thin layer over `memsvc.client`; install with `pip install 'memsvc-client[llamaindex]'`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from memsvc.client import AsyncMemoryClient
from memsvc.integrations import QUERY_MAX_CHARS, message_parts, stamped

try:
    from llama_index.core.base.llms.types import ChatMessage, MessageRole
    from llama_index.core.memory.memory import BaseMemoryBlock
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "memsvc's LlamaIndex integration needs llama-index-core: pip install 'memsvc-client[llamaindex]'"
    ) from exc

_ROLES = {
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


class MemsvcMemoryBlock(BaseMemoryBlock[str]):
    """A user's long-term memory in memsvc, as a block of LlamaIndex's `Memory`."""

    name: str = Field(default="memsvc", description="the block's name in the memory template")
    description: str | None = Field(default="Long-term memory of the user (memsvc)")
    user_id: str = Field(description="whose memory")
    session_id: str | None = Field(default=None, description="the conversation stored messages belong to")
    max_tokens: int = Field(default=1000, ge=50, le=32000, description="size of the context block")
    query_messages: int = Field(
        default=1, ge=1, description="how many of the latest user messages make the query"
    )
    client: AsyncMemoryClient = Field(
        default_factory=AsyncMemoryClient, description="MEMSVC_URL and MEMSVC_API_KEY by default"
    )

    async def _aget(self, messages: list[ChatMessage] | None = None, **block_kwargs: Any) -> str:
        """memsvc's context for the latest user messages ('' when there are none)."""
        asked = [m.content for m in messages or [] if m.role == MessageRole.USER and m.content]
        # The latest words, within what a query may hold: a pasted document asks about its end.
        query = "\n".join(asked[-self.query_messages :]).strip()[-QUERY_MAX_CHARS:].strip()
        if not query:
            return ""
        answer = await self.client.context(query, self.user_id, max_tokens=self.max_tokens)
        return answer.context

    async def _aput(self, messages: list[ChatMessage]) -> None:
        """Store messages in memsvc (those without text are skipped; one longer than a message may
        be is stored in parts). `Memory` hands each message over once, as it leaves the window:
        each is stored as said now, so that "Yes." said again in a later flush is a message of its
        own, not a re-send of the first."""
        batch: list[dict[str, Any]] = []
        session_id = self.session_id
        for message in messages:
            # Memory.aput passes its own session id along in each message.
            session_id = message.additional_kwargs.get("session_id", session_id)
            if (message.content or "").strip():
                role = _ROLES.get(message.role, "user")
                batch += [{"role": role, "content": part} for part in message_parts(message.content or "")]
        for add in stamped(batch, datetime.now(UTC)):
            await self.client.add(add, self.user_id, session_id=session_id, wait=True)


__all__ = ["MemsvcMemoryBlock"]
