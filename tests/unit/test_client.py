"""The SDK's own behaviour, against a fake transport: path encoding and when a request is sent again.

Every case runs through both clients, which must decide alike."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from memsvc.client import (
    AsyncMemoryClient,
    BadRequest,
    ConnectionFailed,
    MemoryClient,
    NotFoundError,
    Overloaded,
    PermissionDenied,
    ServerError,
    ServiceUnavailable,
    _client,
)

Handler = Callable[[httpx.Request], httpx.Response]
JOB = {"job_id": "6f1c1c1e-8a43-4a44-9d0b-2a3c07c2a3d1", "status": "queued"}


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between attempts, recorded instead of slept."""
    recorded: list[float] = []

    async def fake_async_sleep(seconds: float) -> None:
        recorded.append(seconds)

    # The SDK module's own names only: patching time.sleep itself would also catch the sleeps of
    # other threads still running in the session (a live server, its worker).
    monkeypatch.setattr(_client, "time", SimpleNamespace(sleep=recorded.append))
    monkeypatch.setattr(_client, "asyncio", SimpleNamespace(sleep=fake_async_sleep))
    return recorded


def call(kind: str, handler: Handler, method: str, *args: Any, **kwargs: Any) -> Any:
    """`client.method(*args, **kwargs)` on a sync or async client whose requests go to `handler`."""
    transport = httpx.MockTransport(handler)
    if kind == "sync":
        client = MemoryClient("http://memsvc.test", "msk_test")
        client._http = httpx.Client(base_url=client.base_url, headers=client._headers, transport=transport)
        with client:
            return getattr(client, method)(*args, **kwargs)

    async def run() -> Any:
        aclient = AsyncMemoryClient("http://memsvc.test", "msk_test")
        aclient._http = httpx.AsyncClient(
            base_url=aclient.base_url, headers=aclient._headers, transport=transport
        )
        async with aclient:
            return await getattr(aclient, method)(*args, **kwargs)

    return asyncio.run(run())


class Script:
    """A fake server answering from a list, one item per request: a status (with optional
    headers) or an exception class to raise."""

    def __init__(self, *steps: Any, body: Any = None) -> None:
        self.steps = list(steps)
        self.body = body if body is not None else {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, type) and issubclass(step, Exception):
            raise step("simulated", request=request)
        status, headers = step if isinstance(step, tuple) else (step, {})
        if status >= 400:
            problem = {"title": "x", "status": status, "detail": "simulated"}
            return httpx.Response(status, json=problem, headers=headers)
        return httpx.Response(status, json=self.body, headers=headers)


KINDS = ["sync", "async"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("user_id", "raw_path"),
    [
        ("victim?x=1", b"/v1/users/victim%3Fx%3D1"),
        ("org/team/alice", b"/v1/users/org%2Fteam%2Falice"),
        ("a#b", b"/v1/users/a%23b"),
        ("a%2Fb", b"/v1/users/a%252Fb"),
        ("100%", b"/v1/users/100%25"),
        ("..", b"/v1/users/%2E%2E"),
        ("Zoë 用户", b"/v1/users/Zo%C3%AB%20%E7%94%A8%E6%88%B7"),
    ],
)
def test_user_id_is_one_encoded_path_segment(kind: str, user_id: str, raw_path: bytes) -> None:
    script = Script(204)
    call(kind, script, "delete_user", user_id)
    assert script.requests[0].url.raw_path == raw_path


@pytest.mark.parametrize("kind", KINDS)
def test_memory_and_job_ids_are_encoded_too(kind: str) -> None:
    script = Script(404)
    for method, raw_path in [
        ("get", b"/v1/memories/a%2F..%2Fb%3Fc"),
        ("delete", b"/v1/memories/a%2F..%2Fb%3Fc"),
        ("history", b"/v1/memories/a%2F..%2Fb%3Fc/history"),
        ("job", b"/v1/jobs/a%2F..%2Fb%3Fc"),
    ]:
        with pytest.raises(NotFoundError):
            call(kind, script, method, "a/../b?c")
        assert script.requests[-1].url.raw_path == raw_path


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("get", ("m1",)),
        ("delete", ("m1",)),
        ("delete_user", ("u",)),
        ("search", ("q", "u")),
        ("context", ("q", "u")),
        ("add", ([{"role": "user", "content": "hi", "id": "c1"}], "u")),
    ],
)
def test_idempotent_requests_are_retried_on_503(kind: str, method: str, args: tuple[Any, ...], waits) -> None:
    body = {"results": []} if method == "search" else {"context": "", "items": []}
    body = JOB if method == "add" else body
    body = {"id": JOB["job_id"], "type": "episodic", "content": "x"} if method == "get" else body
    script = Script((503, {"Retry-After": "1"}), 503, 200 if method != "delete" else 204, body=body)
    call(kind, script, method, *args)
    assert len(script.requests) == 3
    assert waits[0] == 1.0  # Retry-After, honoured
    assert 0 < waits[1] <= 2 * _client.BACKOFF_S  # no Retry-After: exponential backoff


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("add", ([{"role": "user", "content": "hi"}], "u"), {}),  # no client id: a resend may duplicate
        ("add", ([{"role": "user", "content": "a", "id": "1"}, {"role": "user", "content": "b"}], "u"), {}),
        ("update", ("m1",), {"content": "new"}),
    ],
)
def test_other_requests_are_not_retried_on_503(
    kind: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], waits
) -> None:
    script = Script((503, {"Retry-After": "7"}))
    with pytest.raises(ServiceUnavailable) as info:
        call(kind, script, method, *args, **kwargs)
    assert len(script.requests) == 1 and waits == []
    assert info.value.status_code == 503 and info.value.retry_after == 7.0
    assert isinstance(info.value, ServerError)


@pytest.mark.parametrize("kind", KINDS)
def test_any_add_is_retried_after_429_which_stored_nothing(kind: str, waits) -> None:
    script = Script((429, {"Retry-After": "2"}), 202, body=JOB)
    call(kind, script, "add", [{"role": "user", "content": "no client id"}], "u")
    assert len(script.requests) == 2 and waits == [2.0]


@pytest.mark.parametrize("kind", KINDS)
def test_429_past_the_retries_raises_overloaded(kind: str, waits) -> None:
    script = Script((429, {"Retry-After": "1"}))
    with pytest.raises(Overloaded) as info:
        call(kind, script, "add", [{"role": "user", "content": "x"}], "u")
    assert info.value.status_code == 429 and info.value.retry_after == 1.0
    assert len(script.requests) == _client.RETRIES + 1


@pytest.mark.parametrize("kind", KINDS)
def test_retries_are_bounded_and_waits_capped(kind: str, waits) -> None:
    script = Script((503, {"Retry-After": "3600"}))
    with pytest.raises(ServiceUnavailable):
        call(kind, script, "search", "q", "u")
    assert len(script.requests) == _client.RETRIES + 1
    assert waits == [_client.MAX_WAIT_S] * _client.RETRIES


@pytest.mark.parametrize("kind", KINDS)
def test_retry_after_as_an_http_date(kind: str, waits) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    script = Script((503, {"Retry-After": later}), 200, body={"results": []})
    assert call(kind, script, "search", "q", "u") == []
    assert 3 < waits[0] <= 5


@pytest.mark.parametrize("kind", KINDS)
def test_connect_errors_are_retried_for_any_request(kind: str, waits) -> None:
    memory = {"id": JOB["job_id"], "type": "episodic", "content": "x"}
    script = Script(httpx.ConnectError, httpx.ConnectTimeout, 200, body=memory)
    call(kind, script, "update", "m1", content="x")
    assert len(script.requests) == 3 and len(waits) == 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("error", [httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError])
def test_a_lost_answer_is_retried_only_when_idempotent(kind: str, error: type[Exception], waits) -> None:
    script = Script(error, 200, body={"results": []})
    assert call(kind, script, "search", "q", "u") == []
    assert len(script.requests) == 2

    script = Script(error, 200, body=JOB)
    with pytest.raises(ConnectionFailed, match="no answer"):
        call(kind, script, "add", [{"role": "user", "content": "hi"}], "u")
    assert len(script.requests) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_unreachable_server_raises_connection_failed(kind: str, waits) -> None:
    script = Script(httpx.ConnectError)
    with pytest.raises(ConnectionFailed, match="cannot reach"):
        call(kind, script, "search", "q", "u")
    assert len(script.requests) == _client.RETRIES + 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_timeout_is_not_retried(kind: str, waits) -> None:
    script = Script(httpx.ReadTimeout)
    with pytest.raises(ConnectionFailed):
        call(kind, script, "search", "q", "u")
    assert len(script.requests) == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("content", [b'"Bad Gateway"', b"[1, 2]", b"null", b"<html>Bad Gateway</html>"])
def test_an_error_answer_that_is_not_a_problem_raises_the_sdks_error(kind: str, content: bytes) -> None:
    """A proxy in front of memsvc may answer JSON of any shape, or none: still the SDK's error."""

    def proxy(_: httpx.Request) -> httpx.Response:
        return httpx.Response(502, content=content, headers={"content-type": "application/json"})

    with pytest.raises(ServerError) as info:
        call(kind, proxy, "get", "6f1c1c1e-8a43-4a44-9d0b-2a3c07c2a3d1")
    assert info.value.status_code == 502 and info.value.detail == content.decode()


@pytest.mark.parametrize(
    ("method", "path", "body", "idempotent"),
    [
        ("GET", "/v1/memories", None, True),
        ("DELETE", "/v1/users/u", None, True),
        ("POST", "/v1/search", {}, True),
        ("POST", "/v1/context", {}, True),
        ("PATCH", "/v1/memories/m", {}, False),
        ("POST", "/v1/memories", {"messages": [{"id": "a"}, {"id": "b"}]}, True),
        ("POST", "/v1/memories", {"messages": [{"id": "a"}, {"id": ""}]}, False),
        ("POST", "/v1/memories", {"messages": []}, False),
        ("POST", "/v1/consolidate", {}, False),
    ],
)
def test_idempotent(method: str, path: str, body: Any, idempotent: bool) -> None:
    assert _client._idempotent(method, path, body) is idempotent


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("messages", "says"), [(["hello"], "messages[0] is a str"), ("hello", "list of dicts")]
)
def test_messages_that_are_not_dicts_say_so_before_any_request(kind: str, messages: Any, says: str) -> None:
    script = Script(201, body=JOB)
    with pytest.raises(TypeError, match=re.escape(says)):
        call(kind, script, "add", messages, "u")
    assert script.requests == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_timeout_says_so_and_a_missing_scope_is_permission_denied(kind: str, waits) -> None:
    def silent(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("", request=request)  # httpx's own timeouts often say nothing

    with pytest.raises(ConnectionFailed, match="ReadTimeout: no answer within the timeout"):
        call(kind, silent, "search", "q", "u")

    def forbidden(_: httpx.Request) -> httpx.Response:
        problem = {"title": "forbidden", "status": 403, "detail": "lacks the 'write' scope", "scope": "write"}
        return httpx.Response(403, json=problem)

    with pytest.raises(PermissionDenied) as denied:
        call(kind, forbidden, "add", [{"role": "user", "content": "hi"}], "u")
    assert isinstance(denied.value, BadRequest) and denied.value.problem["scope"] == "write"


def test_integrations_store_a_long_message_in_parts_in_order_and_in_adds_of_a_thousand() -> None:
    from datetime import UTC, datetime, timedelta

    from memsvc.integrations import message_parts, stamped

    text = "a" * 10 + " " + "b" * 30
    assert message_parts(text, limit=16) == ["a" * 10, "b" * 16, "b" * 14]  # a space if there is one
    assert message_parts("", limit=16) == [] and message_parts("short", limit=16) == ["short"]
    now = datetime(2024, 1, 1, tzinfo=UTC)
    adds = list(stamped([{"content": str(i)} for i in range(2500)], now))
    assert [len(add) for add in adds] == [1000, 1000, 500]
    assert adds[2][-1]["created_at"] == now + timedelta(microseconds=2499)
