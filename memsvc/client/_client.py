from __future__ import annotations

import asyncio
import builtins
import json
import os
import random
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx

from memsvc.client._errors import ConnectionFailed, error_for
from memsvc.client.models import (
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
BACKOFF_S = 0.25  # the first wait before a retry; it doubles each time
MAX_WAIT_S = 10.0  # the longest wait before a retry, a server's Retry-After included
MessageLike = dict[str, Any]

# After these the request never reached the server: any request may be sent again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# After these the server may have acted on it: only an idempotent request is sent again.
_MAYBE_SENT = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def _default_api_key() -> str | None:
    """MEMSVC_API_KEY, else the development key `memsvc serve` wrote for the embedded database
    (where the server's settings put it: MEMSVC_DEV_KEY_FILE, else MEMSVC_DATA_DIR/dev-api-key)."""
    if key := os.environ.get("MEMSVC_API_KEY"):
        return key
    if named := os.environ.get("MEMSVC_DEV_KEY_FILE"):
        path = Path(named)
    elif data_dir := os.environ.get("MEMSVC_DATA_DIR"):
        path = Path(data_dir) / "dev-api-key"
    else:
        path = _default_data_dir() / "dev-api-key"
    return path.read_text().strip() if path.is_file() else None


def _default_data_dir() -> Path:
    """The server's default data directory (memsvc.config), found without the server installed."""
    try:
        import platformdirs
    except ImportError:  # the light client alone: where platformdirs puts it on Linux
        return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "memsvc"
    return Path(platformdirs.user_data_dir("memsvc"))


def _body(**fields: Any) -> dict[str, Any]:
    out = {}
    for name, value in fields.items():
        if value is None:
            continue
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _messages(messages: Sequence[MessageLike]) -> builtins.list[dict[str, Any]]:
    if isinstance(messages, str | bytes):
        raise TypeError('messages is a list of dicts, e.g. [{"role": "user", "content": "..."}]')
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise TypeError(
                f"messages[{i}] is a {type(m).__name__}; each message is a dict like "
                '{"role": "user", "content": "..."}'
            )
        out.append({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in m.items()})
    return out


def _segment(value: object) -> str:
    """One path segment, percent-encoded: a user id `a/b?c=1` stays that id, not a path and a query."""
    quoted = quote(str(value), safe="")
    # `.` and `..` alone would be removed from the path as dot segments.
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _idempotent(method: str, path: str, body: Any) -> bool:
    """Whether sending this request twice has the effect of sending it once."""
    if method in ("GET", "HEAD", "DELETE") or (method == "POST" and path in ("/v1/search", "/v1/context")):
        return True
    if method != "POST" or path != "/v1/memories" or not isinstance(body, dict):
        return False
    # The server recognises a message it already stored by its client id: such an add is a no-op.
    messages = body.get("messages") or []
    return bool(messages) and all(isinstance(m, dict) and m.get("id") for m in messages)


def _retry_after(response: httpx.Response) -> float | None:
    """The server's Retry-After in seconds (a number or an HTTP date), if it sent a usable one."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


class _Retry:
    """When to send a request again, and after how long: the one decision both clients share.

    Any request is sent again when it never reached the server (connect errors) or was refused with
    a 429 before anything was stored. An idempotent one
    (`_idempotent`) also after a 503 or a connection lost mid-request: the server may have acted on
    it, and acting twice is harmless. Waits grow exponentially with jitter, or follow Retry-After,
    and never exceed `MAX_WAIT_S`.
    """

    def __init__(self, method: str, path: str, body: Any, retries: int) -> None:
        self.idempotent = _idempotent(method, path, body)
        self.retries = retries
        self.attempt = 0

    def after_response(self, response: httpx.Response) -> float | None:
        """Seconds to wait before sending again, or None to keep this answer."""
        # A 429 (the ingest backlog is full) stored nothing: any request may be sent again.
        if response.status_code == 429 or (response.status_code == 503 and self.idempotent):
            return self._wait(_retry_after(response))
        return None

    def after_error(self, exc: httpx.TransportError) -> float | None:
        """Seconds to wait before sending again, or None to give up."""
        if isinstance(exc, _NOT_SENT) or (self.idempotent and isinstance(exc, _MAYBE_SENT)):
            return self._wait(None)
        return None

    def _wait(self, hint: float | None) -> float | None:
        if self.attempt >= self.retries:
            return None
        backoff = BACKOFF_S * 2**self.attempt * random.uniform(0.5, 1.0)
        self.attempt += 1
        return min(hint if hint is not None else backoff, MAX_WAIT_S)


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):  # not problem+json: a proxy's page, or JSON of another shape
            body = {"title": response.reason_phrase, "detail": response.text[:500]}
        raise error_for(response.status_code, body, _retry_after(response))


def _as_json(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A request's JSON body as ASCII bytes: a lone surrogate travels as its escape and the server
    answers a 422 naming its field (httpx's UTF-8 encoding raised a UnicodeEncodeError)."""
    if "json" not in kwargs:
        return kwargs
    body = kwargs.pop("json")
    try:
        text = json.dumps(body, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:  # NaN or Infinity, which JSON has no way to write
        detail = f"a number is NaN or Infinity, which JSON cannot hold ({exc})"
        raise error_for(422, {"title": "Invalid input", "detail": detail}) from None
    return {**kwargs, "content": text.encode("ascii"), "headers": {"Content-Type": "application/json"}}


def _failed(base_url: str, exc: httpx.TransportError) -> ConnectionFailed:
    if isinstance(exc, _NOT_SENT):
        return ConnectionFailed(f"cannot reach {base_url}: {exc}")
    reason = str(exc) or ("no answer within the timeout" if isinstance(exc, httpx.TimeoutException) else "")
    return ConnectionFailed(f"no answer from {base_url}: {type(exc).__name__}: {reason}")


class _Base:
    def __init__(self, base_url: str | None, api_key: str | None, retries: int) -> None:
        self.base_url = (base_url or os.environ.get("MEMSVC_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = api_key or _default_api_key()
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._retries = retries


class MemoryClient(_Base):
    """Synchronous client of the memsvc v1 API. Mirrors `AsyncMemoryClient` method for method."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 130.0,
        retries: int = RETRIES,
    ) -> None:
        super().__init__(base_url, api_key, retries)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        retry = _Retry(method, path, kwargs.get("json"), self._retries)
        kwargs = _as_json(kwargs)
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if (wait := retry.after_error(exc)) is None:
                    raise _failed(self.base_url, exc) from exc
            else:
                if (wait := retry.after_response(response)) is None:
                    _raise_for(response)
                    return response
            time.sleep(wait)

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
        explain: bool = False,
    ) -> builtins.list[MemoryOut]:
        """`explain=True` puts each result's score, signal by signal, in its `metadata["explain"]`."""
        body = _body(query=query, user_id=user_id, limit=limit, types=types, as_of=as_of, filters=filters)
        if explain:
            body["explain"] = True
        return SearchResponse.model_validate(self._request("POST", "/v1/search", json=body).json()).results

    def context(
        self, query: str, user_id: str, *, max_tokens: int = 1000, as_of: datetime | None = None
    ) -> ContextResponse:
        body = _body(query=query, user_id=user_id, max_tokens=max_tokens, as_of=as_of)
        return ContextResponse.model_validate(self._request("POST", "/v1/context", json=body).json())

    def get(self, memory_id: UUID | str) -> MemoryOut:
        return MemoryOut.model_validate(self._request("GET", f"/v1/memories/{_segment(memory_id)}").json())

    def list(
        self,
        user_id: str,
        *,
        type: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        session_id: str | None = None,
    ) -> MemoryList:
        """Newest stored first; `since`/`until` bound when they happened (event time), `session_id`
        keeps one session's."""
        params = _body(
            user_id=user_id,
            type=type,
            status=status,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
            session_id=session_id,
        )
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
        return MemoryOut.model_validate(
            self._request("PATCH", f"/v1/memories/{_segment(memory_id)}", json=body).json()
        )

    def delete(self, memory_id: UUID | str) -> None:
        self._request("DELETE", f"/v1/memories/{_segment(memory_id)}")

    def history(self, memory_id: UUID | str) -> builtins.list[HistoryEventOut]:
        return HistoryResponse.model_validate(
            self._request("GET", f"/v1/memories/{_segment(memory_id)}/history").json()
        ).events

    def graph(self, user_id: str, *, entity: str | None = None, depth: int = 1) -> GraphResponse:
        params = _body(user_id=user_id, entity=entity, depth=depth)
        return GraphResponse.model_validate(self._request("GET", "/v1/graph", params=params).json())

    def delete_user(self, user_id: str) -> None:
        self._request("DELETE", f"/v1/users/{_segment(user_id)}")

    def job(self, job_id: UUID | str) -> JobOut:
        return JobOut.model_validate(self._request("GET", f"/v1/jobs/{_segment(job_id)}").json())

    def consolidate(self, user_id: str | None = None) -> JobOut:
        """Queue a consolidation of one user (or every user of the tenant); follow it with `job()`."""
        response = self._request("POST", "/v1/consolidate", json=_body(user_id=user_id))
        return JobOut.model_validate(response.json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncMemoryClient(_Base):
    """Asynchronous client of the memsvc v1 API. Mirrors `MemoryClient` method for method."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 130.0,
        retries: int = RETRIES,
    ) -> None:
        super().__init__(base_url, api_key, retries)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=timeout)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        retry = _Retry(method, path, kwargs.get("json"), self._retries)
        kwargs = _as_json(kwargs)
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if (wait := retry.after_error(exc)) is None:
                    raise _failed(self.base_url, exc) from exc
            else:
                if (wait := retry.after_response(response)) is None:
                    _raise_for(response)
                    return response
            await asyncio.sleep(wait)

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
        explain: bool = False,
    ) -> builtins.list[MemoryOut]:
        """`explain=True` puts each result's score, signal by signal, in its `metadata["explain"]`."""
        body = _body(query=query, user_id=user_id, limit=limit, types=types, as_of=as_of, filters=filters)
        if explain:
            body["explain"] = True
        return SearchResponse.model_validate(
            (await self._request("POST", "/v1/search", json=body)).json()
        ).results

    async def context(
        self, query: str, user_id: str, *, max_tokens: int = 1000, as_of: datetime | None = None
    ) -> ContextResponse:
        body = _body(query=query, user_id=user_id, max_tokens=max_tokens, as_of=as_of)
        return ContextResponse.model_validate((await self._request("POST", "/v1/context", json=body)).json())

    async def get(self, memory_id: UUID | str) -> MemoryOut:
        return MemoryOut.model_validate(
            (await self._request("GET", f"/v1/memories/{_segment(memory_id)}")).json()
        )

    async def list(
        self,
        user_id: str,
        *,
        type: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        session_id: str | None = None,
    ) -> MemoryList:
        """Newest stored first; `since`/`until` bound when they happened (event time), `session_id`
        keeps one session's."""
        params = _body(
            user_id=user_id,
            type=type,
            status=status,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
            session_id=session_id,
        )
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
            (await self._request("PATCH", f"/v1/memories/{_segment(memory_id)}", json=body)).json()
        )

    async def delete(self, memory_id: UUID | str) -> None:
        await self._request("DELETE", f"/v1/memories/{_segment(memory_id)}")

    async def history(self, memory_id: UUID | str) -> builtins.list[HistoryEventOut]:
        response = await self._request("GET", f"/v1/memories/{_segment(memory_id)}/history")
        return HistoryResponse.model_validate(response.json()).events

    async def graph(self, user_id: str, *, entity: str | None = None, depth: int = 1) -> GraphResponse:
        params = _body(user_id=user_id, entity=entity, depth=depth)
        return GraphResponse.model_validate((await self._request("GET", "/v1/graph", params=params)).json())

    async def delete_user(self, user_id: str) -> None:
        await self._request("DELETE", f"/v1/users/{_segment(user_id)}")

    async def job(self, job_id: UUID | str) -> JobOut:
        return JobOut.model_validate((await self._request("GET", f"/v1/jobs/{_segment(job_id)}")).json())

    async def consolidate(self, user_id: str | None = None) -> JobOut:
        """Queue a consolidation of one user (or every user of the tenant); follow it with `job()`."""
        response = await self._request("POST", "/v1/consolidate", json=_body(user_id=user_id))
        return JobOut.model_validate(response.json())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


__all__ = ["AsyncMemoryClient", "MemoryClient"]
