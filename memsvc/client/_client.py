from __future__ import annotations

import asyncio
import builtins
import os
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import httpx

from memsvc.client._errors import ConnectionFailed, error_for
from memsvc.schemas import (
    AddResponse,
    ContextResponse,
    GraphResponse,
    HistoryEventOut,
    HistoryResponse,
    JobOut,
    MemoryList,
    MemoryOut,
    SearchResponse,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
RETRIES = 3
MessageLike = dict[str, Any]


def _default_api_key() -> str | None:
    """MEMSVC_API_KEY, else the development key `memsvc serve` wrote for the embedded database."""
    if key := os.environ.get("MEMSVC_API_KEY"):
        return key
    from memsvc.config import Settings

    settings = Settings()
    path = settings.dev_key_file or settings.data_dir / "dev-api-key"
    return path.read_text().strip() if path.exists() else None


def _body(**fields: Any) -> dict[str, Any]:
    out = {}
    for name, value in fields.items():
        if value is None:
            continue
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _messages(messages: Sequence[MessageLike]) -> builtins.list[dict[str, Any]]:
    return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in m.items()} for m in messages]


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = {"title": response.reason_phrase, "detail": response.text[:500]}
        raise error_for(response.status_code, body)


class _Base:
    def __init__(self, base_url: str | None, api_key: str | None) -> None:
        self.base_url = (base_url or os.environ.get("MEMSVC_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = api_key or _default_api_key()
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}


class MemoryClient(_Base):
    """Synchronous client of the memsvc v1 API. Mirrors `AsyncMemoryClient` method for method."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 130.0
    ) -> None:
        super().__init__(base_url, api_key)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        # Retry only when the request never reached the server: anything else may have taken effect.
        for attempt in range(RETRIES + 1):
            try:
                response = self._http.request(method, path, **kwargs)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == RETRIES:
                    raise ConnectionFailed(f"cannot reach {self.base_url}: {exc}") from exc
                time.sleep(0.2 * 2**attempt)
        _raise_for(response)
        return response

    def add(
        self,
        messages: Sequence[MessageLike],
        user_id: str,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        wait: bool = False,
    ) -> AddResponse:
        body = _body(user_id=user_id, agent_id=agent_id, session_id=session_id, metadata=metadata, wait=wait)
        body["messages"] = _messages(messages)
        return AddResponse.model_validate(self._request("POST", "/v1/memories", json=body).json())

    def search(
        self,
        query: str,
        user_id: str,
        *,
        limit: int = 10,
        types: builtins.list[str] | None = None,
        as_of: datetime | None = None,
        filters: dict[str, Any] | None = None,
    ) -> builtins.list[MemoryOut]:
        body = _body(query=query, user_id=user_id, limit=limit, types=types, as_of=as_of, filters=filters)
        return SearchResponse.model_validate(self._request("POST", "/v1/search", json=body).json()).results

    def context(self, query: str, user_id: str, *, max_tokens: int = 1000) -> ContextResponse:
        body = _body(query=query, user_id=user_id, max_tokens=max_tokens)
        return ContextResponse.model_validate(self._request("POST", "/v1/context", json=body).json())

    def get(self, memory_id: UUID | str) -> MemoryOut:
        return MemoryOut.model_validate(self._request("GET", f"/v1/memories/{memory_id}").json())

    def list(
        self, user_id: str, *, type: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> MemoryList:
        params = _body(user_id=user_id, type=type, limit=limit, cursor=cursor)
        return MemoryList.model_validate(self._request("GET", "/v1/memories", params=params).json())

    def update(
        self,
        memory_id: UUID | str,
        *,
        content: str | None = None,
        metadata: dict[str, Any] | None = None,
        pinned: bool | None = None,
    ) -> MemoryOut:
        body = _body(content=content, metadata=metadata, pinned=pinned)
        return MemoryOut.model_validate(self._request("PATCH", f"/v1/memories/{memory_id}", json=body).json())

    def delete(self, memory_id: UUID | str) -> None:
        self._request("DELETE", f"/v1/memories/{memory_id}")

    def history(self, memory_id: UUID | str) -> builtins.list[HistoryEventOut]:
        return HistoryResponse.model_validate(
            self._request("GET", f"/v1/memories/{memory_id}/history").json()
        ).events

    def graph(self, user_id: str, *, entity: str | None = None, depth: int = 1) -> GraphResponse:
        params = _body(user_id=user_id, entity=entity, depth=depth)
        return GraphResponse.model_validate(self._request("GET", "/v1/graph", params=params).json())

    def delete_user(self, user_id: str) -> None:
        self._request("DELETE", f"/v1/users/{user_id}")

    def job(self, job_id: UUID | str) -> JobOut:
        return JobOut.model_validate(self._request("GET", f"/v1/jobs/{job_id}").json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncMemoryClient(_Base):
    """Asynchronous client of the memsvc v1 API. Mirrors `MemoryClient` method for method."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 130.0
    ) -> None:
        super().__init__(base_url, api_key)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=timeout)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(RETRIES + 1):
            try:
                response = await self._http.request(method, path, **kwargs)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == RETRIES:
                    raise ConnectionFailed(f"cannot reach {self.base_url}: {exc}") from exc
                await asyncio.sleep(0.2 * 2**attempt)
        _raise_for(response)
        return response

    async def add(
        self,
        messages: Sequence[MessageLike],
        user_id: str,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        wait: bool = False,
    ) -> AddResponse:
        body = _body(user_id=user_id, agent_id=agent_id, session_id=session_id, metadata=metadata, wait=wait)
        body["messages"] = _messages(messages)
        return AddResponse.model_validate((await self._request("POST", "/v1/memories", json=body)).json())

    async def search(
        self,
        query: str,
        user_id: str,
        *,
        limit: int = 10,
        types: builtins.list[str] | None = None,
        as_of: datetime | None = None,
        filters: dict[str, Any] | None = None,
    ) -> builtins.list[MemoryOut]:
        body = _body(query=query, user_id=user_id, limit=limit, types=types, as_of=as_of, filters=filters)
        return SearchResponse.model_validate(
            (await self._request("POST", "/v1/search", json=body)).json()
        ).results

    async def context(self, query: str, user_id: str, *, max_tokens: int = 1000) -> ContextResponse:
        body = _body(query=query, user_id=user_id, max_tokens=max_tokens)
        return ContextResponse.model_validate((await self._request("POST", "/v1/context", json=body)).json())

    async def get(self, memory_id: UUID | str) -> MemoryOut:
        return MemoryOut.model_validate((await self._request("GET", f"/v1/memories/{memory_id}")).json())

    async def list(
        self, user_id: str, *, type: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> MemoryList:
        params = _body(user_id=user_id, type=type, limit=limit, cursor=cursor)
        return MemoryList.model_validate((await self._request("GET", "/v1/memories", params=params)).json())

    async def update(
        self,
        memory_id: UUID | str,
        *,
        content: str | None = None,
        metadata: dict[str, Any] | None = None,
        pinned: bool | None = None,
    ) -> MemoryOut:
        body = _body(content=content, metadata=metadata, pinned=pinned)
        return MemoryOut.model_validate(
            (await self._request("PATCH", f"/v1/memories/{memory_id}", json=body)).json()
        )

    async def delete(self, memory_id: UUID | str) -> None:
        await self._request("DELETE", f"/v1/memories/{memory_id}")

    async def history(self, memory_id: UUID | str) -> builtins.list[HistoryEventOut]:
        response = await self._request("GET", f"/v1/memories/{memory_id}/history")
        return HistoryResponse.model_validate(response.json()).events

    async def graph(self, user_id: str, *, entity: str | None = None, depth: int = 1) -> GraphResponse:
        params = _body(user_id=user_id, entity=entity, depth=depth)
        return GraphResponse.model_validate((await self._request("GET", "/v1/graph", params=params)).json())

    async def delete_user(self, user_id: str) -> None:
        await self._request("DELETE", f"/v1/users/{user_id}")

    async def job(self, job_id: UUID | str) -> JobOut:
        return JobOut.model_validate((await self._request("GET", f"/v1/jobs/{job_id}")).json())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


__all__ = ["AsyncMemoryClient", "MemoryClient"]
