"""The API's body limit: a body larger than any valid request is a 413 whether it declares its
length or is sent in chunks without one, and a chunked body within the limit reaches the route
whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from memsvc.api.app import BodyLimit, largest_body


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())})


def _client() -> tuple[httpx.AsyncClient, int]:
    settings = SimpleNamespace(max_messages_per_request=1, max_content_chars=100)
    app = BodyLimit(
        Starlette(routes=[Route("/", _echo, methods=["POST", "GET"])]), SimpleNamespace(settings=settings)
    )  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://test"), largest_body(settings)  # type: ignore[arg-type]


async def _chunks(total: int, size: int = 65536) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"x" * piece


def test_a_chunked_body_past_the_limit_is_413_and_one_within_it_arrives_whole() -> None:
    async def run() -> None:
        client, limit = _client()
        async with client:
            over = await client.post("/", content=_chunks(limit + 1))
            assert over.status_code == 413, over.text
            assert over.headers["content-type"].startswith("application/problem+json")
            assert over.json()["code"] == "payload_too_large"
            within = await client.post("/", content=_chunks(limit))
            assert within.status_code == 200 and within.json() == {"bytes": limit}
            declared = await client.post("/", content=b"x" * (limit + 1))  # with a Content-Length
            assert declared.status_code == 413 and str(limit + 1) in declared.json()["detail"]
            assert (await client.get("/")).json() == {"bytes": 0}

    asyncio.run(run())


def test_the_largest_valid_add_fits_the_limit_with_every_character_escaped() -> None:
    import json

    from memsvc.schemas import MAX_JSON_BYTES, AddRequest

    settings = SimpleNamespace(max_messages_per_request=2, max_content_chars=100)
    emoji = "\U0001f600"  # 4 bytes in UTF-8, 12 written as "\ud83d\ude00"
    message = {"role": "user", "content": emoji * 100, "name": emoji * 255, "id": emoji * 255}
    metadata = {"k": emoji * ((MAX_JSON_BYTES - 16) // 4)}
    body = {"user_id": emoji * 255, "messages": [message, {**message, "id": "x"}], "metadata": metadata}
    AddRequest.model_validate(body)  # valid (the content limit is the service's, checked there)
    escaped = json.dumps(body)  # ensure_ascii: Python's and requests' default
    assert len(escaped) <= largest_body(settings) < 2 * len(escaped)  # type: ignore[arg-type]
