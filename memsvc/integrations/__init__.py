"""memsvc where agents already are: an MCP server (`mcp_server`), a LangChain chat message history
(`langchain`) and a LlamaIndex memory block (`llamaindex`).

Each is one short module over the SDK (`memsvc.client`) and ships with it in `memsvc-client`,
importable only with its extra installed (`pip install 'memsvc-client[mcp]'`, `[langchain]`,
`[llamaindex]`); none imports another's framework.
"""

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

# The API's default bounds (a server may be configured otherwise): what one message may hold, how
# many one add may carry, and how long a query may be.
MESSAGE_MAX_CHARS = 32_000
MESSAGES_PER_ADD = 1000
QUERY_MAX_CHARS = 4000


def message_parts(text: str, limit: int = MESSAGE_MAX_CHARS) -> list[str]:
    """A message's text in parts the API takes (a pasted document of 40,000 characters is two
    messages, cut at a space where there is one), so it is stored whole rather than refused."""
    parts = []
    while len(text) > limit:
        cut = text.rfind(" ", limit // 2, limit + 1)
        cut = cut if cut > 0 else limit
        parts.append(text[:cut])
        text = text[cut:].lstrip(" ")
    return [*parts, text] if text else parts


def stamped(messages: list[dict[str, Any]], now: datetime) -> Iterator[list[dict[str, Any]]]:
    """The messages, each given `created_at` one microsecond after the one before (so they read
    back in the order they were said), in adds of at most `MESSAGES_PER_ADD`."""
    for i, message in enumerate(messages):
        message["created_at"] = now + timedelta(microseconds=i)
    for start in range(0, len(messages), MESSAGES_PER_ADD):
        yield messages[start : start + MESSAGES_PER_ADD]
