"""`memsvc mcp`: a user's long-term memory as Model Context Protocol tools, over stdio or streamable
HTTP, with the official `mcp` SDK.

It is a client of the REST API (through `memsvc.client`), never of the database, so it runs
wherever the API is reachable and can do exactly what its API key may: the key picks the tenant,
and every tool works on one user, the `user_id` argument or else the configured default. Over
HTTP a caller's own `Authorization: Bearer <key>` is used in place of the configured key, so one
MCP endpoint serves several tenants, each seeing only its own memories.
"""

import argparse
import importlib.metadata
import inspect
import json
import os
from collections import OrderedDict
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from pydantic import Field

from memsvc.client import (
    AddResponse,
    AsyncMemoryClient,
    MemoryList,
    MemoryOut,
    MemsvcClientError,
    NotFoundError,
)

try:
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import CallToolResult, TextContent
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "memsvc's MCP server needs the `mcp` package: pip install 'memsvc-client[mcp]'"
    ) from exc

INSTRUCTIONS = """Long-term memory of conversations with a user (memsvc).
Store what the user says that is worth remembering with add_memory; before answering a question
that may depend on the past, call get_context (a ready block for your prompt) or search_memory
(individual memories with scores and sources). Times are ISO 8601 with the UTC offset they were
said with (UTC where none was given). Memories belong to one user."""

UserId = Annotated[
    str | None,
    Field(
        description="whose memory: the end user's id. Leave out to use the server's default user.",
        min_length=1,
        max_length=255,
    ),
]
# The API's bounds, in the tools' schemas: a model reads them there instead of meeting a 422.
QUERY_LENGTH: dict[str, Any] = {"min_length": 1, "max_length": 4000}
# What search and listing hold; the graph (entities, relations) is its own endpoint.
MemoryType = Literal["episodic", "semantic"]

T = TypeVar("T")

# Clients kept open for callers' keys (HTTP): bounded, the least recently used closed first.
MAX_CLIENTS = 32


class MemoryTools:
    """The tools, bound to a memsvc API (`base_url`), a default key and a default user."""

    def __init__(self, base_url: str | None, api_key: str | None, user_id: str | None) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.user_id = user_id
        self._clients: OrderedDict[str | None, AsyncMemoryClient] = OrderedDict()

    async def client(self, ctx: Context) -> AsyncMemoryClient:
        key = _bearer(ctx.headers) or self.api_key
        if key in self._clients:
            self._clients.move_to_end(key)
            return self._clients[key]
        client = self._clients[key] = AsyncMemoryClient(self.base_url, key)
        while len(self._clients) > MAX_CLIENTS:
            await self._clients.popitem(last=False)[1].aclose()
        return client

    def user(self, user_id: str | None) -> str:
        if user_id := user_id or self.user_id:
            return user_id
        raise ToolError("user_id is required: this server has no default user (MEMSVC_USER_ID)")

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def add_memory(
        self,
        content: Annotated[str, Field(description="what was said, in the speaker's own words", min_length=1)],
        ctx: Context,
        user_id: UserId = None,
        role: Annotated[
            Literal["user", "assistant"], Field(description="who said it: the user or the assistant")
        ] = "user",
        speaker: Annotated[
            str | None, Field(description="the speaker's name, e.g. 'Caroline'", max_length=255)
        ] = None,
        session_id: Annotated[
            str | None, Field(description="the conversation this belongs to", min_length=1, max_length=255)
        ] = None,
        message_id: Annotated[
            str | None,
            Field(
                description="a stable id of the message: sending it again stores nothing new",
                min_length=1,
                max_length=255,
            ),
        ] = None,
        created_at: Annotated[
            str | None, Field(description="when it was said, ISO 8601 (default: now; no zone = UTC)")
        ] = None,
        wait: Annotated[
            bool, Field(description="wait until it is stored and searchable (default) or return at once")
        ] = True,
    ) -> AddResponse:
        """Remember a message of the conversation. memsvc keeps the message itself and extracts
        facts, preferences, plans, events, people and places from it, with their dates."""
        message: dict[str, Any] = {"role": role, "content": content}
        for name, value in (("name", speaker), ("id", message_id), ("created_at", created_at)):
            if value:
                message[name] = value
        client = await self.client(ctx)
        return await _call(client.add([message], self.user(user_id), session_id=session_id, wait=wait))

    async def search_memory(
        self,
        query: Annotated[
            str, Field(description="a question or keywords, e.g. 'Where does Ann live?'", **QUERY_LENGTH)
        ],
        ctx: Context,
        user_id: UserId = None,
        limit: Annotated[int, Field(description="how many results", ge=1, le=100)] = 10,
        types: Annotated[
            list[MemoryType] | None,
            Field(description="only these memory types (episodic: turns and sessions; semantic: facts)"),
        ] = None,
    ) -> Annotated[CallToolResult, list[MemoryOut]]:
        """Search the user's memories, best first: each with its text, score, type, dates and the
        ids of the messages it came from."""
        client = await self.client(ctx)
        kinds = list[str](types) if types else None
        found = await _call(client.search(query, self.user(user_id), limit=limit, types=kinds))
        items = [m.model_dump(mode="json") for m in found]
        # A text block even for no result: a client that shows a model only the content would
        # otherwise show it nothing at all, not "nothing found".
        blocks = [TextContent(type="text", text=json.dumps(item, indent=2)) for item in items] or [
            TextContent(type="text", text="(no memory matches this query)")
        ]
        return CallToolResult(content=blocks, structured_content={"result": items})

    async def get_context(
        self,
        query: Annotated[
            str, Field(description="what the next answer is about, e.g. the user's question", **QUERY_LENGTH)
        ],
        ctx: Context,
        user_id: UserId = None,
        max_tokens: Annotated[int, Field(description="size of the block in tokens", ge=50, le=32000)] = 1000,
    ) -> str:
        """A ready block of what memory knows about the query, to put in the prompt: facts first,
        then the events they come from with their dates, then the people and places involved."""
        client = await self.client(ctx)
        answer = await _call(client.context(query, self.user(user_id), max_tokens=max_tokens))
        return answer.context or "(nothing in memory about this)"

    async def list_memories(
        self,
        ctx: Context,
        user_id: UserId = None,
        type: Annotated[MemoryType | None, Field(description="only memories of this type")] = None,
        limit: Annotated[int, Field(description="page size", ge=1, le=200)] = 20,
        cursor: Annotated[
            str | None, Field(description="next_cursor of the previous page, for the next one")
        ] = None,
    ) -> MemoryList:
        """List the user's memories, newest first, a page at a time."""
        client = await self.client(ctx)
        return await _call(client.list(self.user(user_id), type=type, limit=limit, cursor=cursor))

    async def delete_memory(
        self,
        memory_id: Annotated[UUID, Field(description="the memory's id, as search or list gave it")],
        ctx: Context,
        user_id: UserId = None,
    ) -> str:
        """Delete one memory of the user for good (its history keeps a record of the deletion)."""
        client = await self.client(ctx)
        user = self.user(user_id)
        memory = await _call(client.get(memory_id))
        if memory.user_id != user:
            # Another user's memory is as invisible here as another tenant's.
            raise ToolError(f"no memory {memory_id} for user {user!r}")
        await _call(client.delete(memory_id))
        return f"deleted memory {memory_id}"


async def _call(pending: Awaitable[T]) -> T:
    """Await an SDK call; its errors become tool errors the model can read."""
    try:
        result = await pending
    except NotFoundError as exc:
        raise ToolError(f"not found: {exc.detail}") from exc
    except MemsvcClientError as exc:
        raise ToolError(str(exc)) from exc
    return result


def _bearer(headers: Mapping[str, str] | None) -> str | None:
    value = (headers or {}).get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _version() -> str:
    try:
        return importlib.metadata.version("memsvc-client")
    except importlib.metadata.PackageNotFoundError:  # a source checkout without it installed
        return "0"


def build_server(
    base_url: str | None = None, api_key: str | None = None, user_id: str | None = None
) -> MCPServer:
    """The MCP server with memsvc's tools. `base_url` and `api_key` default as the SDK's do
    (MEMSVC_URL, MEMSVC_API_KEY, the development key); `user_id` is the default user."""
    tools = MemoryTools(base_url, api_key, user_id)
    server: MCPServer = MCPServer("memsvc", version=_version(), instructions=INSTRUCTIONS)
    for tool, title in (
        (tools.add_memory, "Remember a message"),
        (tools.search_memory, "Search memory"),
        (tools.get_context, "Memory context for a prompt"),
        (tools.list_memories, "List memories"),
        (tools.delete_memory, "Delete a memory"),
    ):
        # The docstring without its source indentation, as a model reads it.
        server.add_tool(tool, title=title, description=inspect.cleandoc(tool.__doc__ or ""))
    return server


def run(
    transport: Literal["stdio", "streamable-http"],
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    user_id: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
) -> None:
    """Serve until stopped: stdio (the agent spawns `memsvc mcp`) or streamable HTTP at /mcp."""
    server = build_server(base_url, api_key, user_id)
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=port)


def main(argv: list[str] | None = None) -> None:
    """`memsvc-mcp`: the same server as `memsvc mcp`, for where only memsvc-client is installed."""
    parser = argparse.ArgumentParser(prog="memsvc-mcp", description="memsvc's memory as MCP tools")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="default: stdio")
    parser.add_argument("--url", help="the memsvc API (default: MEMSVC_URL, else http://127.0.0.1:8000)")
    parser.add_argument("--user-id", help="the default user of every tool (default: MEMSVC_USER_ID)")
    parser.add_argument("--host", default="127.0.0.1", help="http: the address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="http: the port (the endpoint is /mcp)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"argument --port: a port is 1 to 65535, not {args.port}")
    run(
        "stdio" if args.transport == "stdio" else "streamable-http",
        base_url=args.url,
        user_id=args.user_id or os.environ.get("MEMSVC_USER_ID"),
        host=args.host,
        port=args.port,
    )


if __name__ == "__main__":
    main()
