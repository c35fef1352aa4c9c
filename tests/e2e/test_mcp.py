"""`memsvc mcp` driven by the official MCP SDK's own client, over stdio (the client spawns the
command, as an agent does) and over streamable HTTP, against a running memsvc: every tool, the
default user and the user_id argument, and one tenant's key never reaching another's memories."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from memsvc.client import MemoryClient, NotFoundError

pytestmark = pytest.mark.slow

TOOLS = {"add_memory", "search_memory", "get_context", "list_memories", "delete_memory"}


def memsvc_command() -> list[str]:
    """The installed `memsvc` script beside this interpreter, as an agent's config would name it."""
    script = Path(sys.executable).with_name("memsvc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "memsvc.cli"]


def other_key(database: Any) -> str:
    from memsvc.tenants import create_api_key

    with database.session() as session:
        return create_api_key(session, f"t-{uuid.uuid4().hex[:12]}")


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    return " ".join(getattr(block, "text", "") for block in result.content)


async def exercise(client: Client, user: dict[str, str]) -> str:
    """Every tool once, for the user that `user` names (`{}`: the server's default user).
    Returns the id of a memory it left in place."""
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and len(tool.description) > 30, tool.name
        assert "\n    " not in tool.description, tool.description  # no source indentation
        assert tool.input_schema["type"] == "object"
        for name, prop in tool.input_schema["properties"].items():
            assert prop.get("description"), f"{tool.name}.{name} has no description"

    added = await call(
        client,
        "add_memory",
        content="I moved to Lisbon last month and I adopted a cat called Miso.",
        speaker="Ann",
        message_id="m1",
        created_at="2024-03-10T09:00:00Z",
        session_id="s1",
        **user,
    )
    assert added["status"] == "succeeded" and added["result"]["memory_ids"]
    again = await call(client, "add_memory", content="I moved to Lisbon last month.", message_id="m1", **user)
    assert again["result"]["duplicates"] == 1 and not again["result"]["memory_ids"]
    await call(
        client,
        "add_memory",
        content="I play the cello on Sundays.",
        speaker="Ann",
        message_id="m2",
        created_at="2024-03-10T09:05:00Z",
        session_id="s1",
        **user,
    )

    hits = (await call(client, "search_memory", query="What is the name of Ann's cat?", limit=5, **user))[
        "result"
    ]
    assert hits and any("Miso" in hit["content"] for hit in hits)
    assert hits[0]["score"] is not None and hits[0]["source_message_ids"] == ["m1"]
    facts = (await call(client, "search_memory", query="cat", types=["semantic"], **user))["result"]
    assert facts and {hit["type"] for hit in facts} == {"semantic"}

    context = (await call(client, "get_context", query="Where does Ann live?", max_tokens=200, **user))[
        "result"
    ]
    assert "Lisbon" in context

    page = await call(client, "list_memories", limit=2, **user)
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = await call(client, "list_memories", limit=200, cursor=page["next_cursor"], **user)
    every = page["items"] + rest["items"]
    assert {m["id"] for m in page["items"]}.isdisjoint({m["id"] for m in rest["items"]})

    turn = next(m for m in every if m["type"] == "episodic" and m["kind"] == "turn")
    deleted = await call(client, "delete_memory", memory_id=turn["id"], **user)
    assert turn["id"] in deleted["result"]
    remaining = await call(client, "list_memories", limit=200, **user)
    assert turn["id"] not in {m["id"] for m in remaining["items"]}
    # What only that message stated went with it; its session's digest no longer cites it.
    said = turn["source_message_ids"][0]
    assert remaining["items"] and all(said not in m["source_message_ids"] for m in remaining["items"])
    assert "not found" in await call_error(client, "delete_memory", memory_id=turn["id"], **user)
    return next(m["id"] for m in remaining["items"])


async def test_stdio_every_tool_with_the_default_user(live_server: str, tenant: Any, tmp_path: Path) -> None:
    _, key = tenant
    env = {
        "MEMSVC_URL": live_server,
        "MEMSVC_API_KEY": key,
        "MEMSVC_USER_ID": "ann",
        "MEMSVC_DATA_DIR": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
    }
    command = memsvc_command()
    params = StdioServerParameters(command=command[0], args=[*command[1:], "mcp"], env=env)
    async with Client(params, read_timeout_seconds=120) as client:
        kept = await exercise(client, {})
        # user_id overrides the default; another user's memory cannot be deleted through it.
        await call(
            client, "add_memory", content="I work as a nurse.", speaker="Bo", user_id="bo", message_id="b1"
        )
        bo_hits = (await call(client, "search_memory", query="nurse", user_id="bo"))["result"]
        assert bo_hits and all("Lisbon" not in hit["content"] for hit in bo_hits)
        assert "no memory" in await call_error(client, "delete_memory", memory_id=kept, user_id="bo")
        assert "not found" in await call_error(
            client, "delete_memory", memory_id=str(uuid.uuid4())
        )  # an id that never existed

    with MemoryClient(live_server, key) as sdk:
        assert sdk.get(kept).user_id == "ann"
        assert {m.user_id for m in sdk.list("bo").items} == {"bo"}


@pytest.fixture
def mcp_http(live_server: str, tmp_path: Path) -> Iterator[str]:
    """`memsvc mcp --transport http` with no key of its own: each caller brings one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSVC_")}
    env |= {"MEMSVC_URL": live_server, "MEMSVC_DATA_DIR": str(tmp_path)}
    command = [*memsvc_command(), "mcp", "--transport", "http", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"memsvc mcp did not start: {process.stderr.read()!r}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=30)


def http_client(url: str, key: str | None) -> Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    transport = streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=120))
    return Client(transport, read_timeout_seconds=120)


async def test_streamable_http_every_tool_with_the_callers_key(
    mcp_http: str, live_server: str, tenant: Any, database: Any
) -> None:
    _, key = tenant
    async with http_client(mcp_http, key) as client:
        # No default user on this server: a tool without user_id says so.
        assert "user_id is required" in await call_error(client, "search_memory", query="anything")
        kept = await exercise(client, {"user_id": "ann"})

    # Another tenant's key, through the same endpoint, sees none of it.
    async with http_client(mcp_http, other_key(database)) as stranger:
        empty = await stranger.call_tool("search_memory", {"query": "Lisbon", "user_id": "ann"})
        assert not empty.is_error and empty.structured_content == {"result": []}
        # A client that shows the model only the content still shows it that nothing matched.
        assert [block.text for block in empty.content] == ["(no memory matches this query)"]  # type: ignore[union-attr]
        assert (await call(stranger, "list_memories", user_id="ann"))["items"] == []
        assert "not found" in await call_error(stranger, "delete_memory", memory_id=kept, user_id="ann")

    # A caller with no key (and a server with none) is refused by memsvc, not served.
    async with http_client(mcp_http, None) as anonymous:
        message = await call_error(anonymous, "search_memory", query="Lisbon", user_id="ann")
        assert "401" in message

    with MemoryClient(live_server, key) as sdk:
        assert sdk.get(kept).user_id == "ann"
    with MemoryClient(live_server, other_key(database)) as sdk, pytest.raises(NotFoundError):
        sdk.get(kept)


async def test_memsvc_mcp_script_of_the_light_client(live_server: str, tenant: Any, tmp_path: Path) -> None:
    """`memsvc-mcp` (memsvc-client[mcp]'s command) serves the same tools."""
    _, key = tenant
    env = {"MEMSVC_URL": live_server, "MEMSVC_API_KEY": key, "MEMSVC_DATA_DIR": str(tmp_path)}
    params = StdioServerParameters(command=str(Path(sys.executable).with_name("memsvc-mcp")), env=env)
    async with Client(params, read_timeout_seconds=120) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
        added = await call(client, "add_memory", content="I keep bees on my roof.", user_id="cy")
        assert added["status"] == "succeeded"
        assert (
            "bees" in (await call(client, "get_context", query="What does Cy keep?", user_id="cy"))["result"]
        )


async def test_arguments_the_api_would_refuse_are_refused_by_the_tools_schema() -> None:
    """What a tool's schema admits, the API takes: a model reads the bounds there, instead of
    meeting a 422 after the call (no server is needed: nothing reaches one)."""
    from memsvc.integrations.mcp_server import build_server

    async with Client(build_server("http://127.0.0.1:9", "msk_unused", "ann")) as client:
        schemas = {tool.name: tool.input_schema["properties"] for tool in (await client.list_tools()).tools}
        for tool, argument, bad in [
            ("add_memory", "session_id", ""),
            ("add_memory", "message_id", ""),
            ("add_memory", "message_id", "m" * 256),
            ("search_memory", "query", ""),
            ("search_memory", "query", "q" * 4001),
            ("get_context", "query", "q" * 4001),
        ]:
            arguments = {"content": "I moved to Lisbon."} if tool == "add_memory" else {"query": "Lisbon"}
            message = await call_error(client, tool, **{**arguments, argument: bad})
            assert argument in message and "cannot reach" not in message, (tool, argument, message)
        assert "maxLength" in str(schemas["add_memory"]["message_id"])
        assert schemas["search_memory"]["query"]["maxLength"] == 4000
