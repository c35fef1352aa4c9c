"""The public contract through real HTTP, the SDK and a real database."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import uuid
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from memsvc.client import AsyncMemoryClient, AuthenticationError, BadRequest, MemoryClient, NotFoundError

CONVERSATION = [
    {
        "role": "user",
        "name": "Caroline",
        "id": "c1",
        "created_at": "2023-05-08T13:56:00+00:00",
        "content": "I went to a LGBTQ support group yesterday and it was so powerful.",
    },
    {
        "role": "user",
        "name": "Melanie",
        "id": "c2",
        "created_at": "2023-05-08T13:57:00+00:00",
        "content": "Wow, that's cool, Caroline! I painted a lake sunrise last year, it's special to me.",
    },
    {
        "role": "user",
        "name": "Caroline",
        "id": "c3",
        "created_at": "2023-05-08T13:58:00+00:00",
        "content": "I'm thinking of studying counseling so I can help people who went through what I did.",
    },
]


def _rows_of_user(sql: psycopg.Connection, tenant_id: uuid.UUID, user_id: str) -> dict[str, int]:
    tables = [
        r[0]
        for r in sql.execute(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name = 'user_id'"
        ).fetchall()
    ]
    assert {
        "memories",
        "memory_sources",
        "entities",
        "relations",
        "entity_mentions",
        "history",
        "jobs",
    } <= set(tables)
    return {
        t: sql.execute(
            f"SELECT count(*) FROM {t} WHERE tenant_id = %s AND user_id = %s", (tenant_id, user_id)
        ).fetchone()[0]
        for t in tables
    }


def _total_rows(sql: psycopg.Connection) -> int:
    return sum(
        sql.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("memories", "memory_sources", "entities", "relations", "history", "jobs")
    )


def test_add_then_search_returns_the_turn_first_with_its_message_id(client: MemoryClient) -> None:
    added = client.add(CONVERSATION, user_id="alice", session_id="s1", wait=True)
    assert added.status == "succeeded" and added.result is not None
    assert added.result.created["turn"] == 3, added

    for message in CONVERSATION:
        results = client.search(message["content"], user_id="alice", types=["episodic"])
        top = results[0]
        assert top.type == "episodic"
        assert message["id"] in top.source_message_ids
        assert message["content"] in top.content
        assert top.event_at is not None and top.event_at.isoformat().startswith("2023-05-08")
        if top.kind == "turn":
            assert top.content == message["content"] and top.source_message_ids == [message["id"]]
        else:  # adjacent turns merged into one excerpt: still exactly the turns it quotes
            assert top.kind == "excerpt" and len(top.source_message_ids) <= 3
            assert len(top.metadata["memory_ids"]) == len(top.source_message_ids)

    # Among unrelated turns, the turn comes back alone and exact.
    client.add(
        [
            {
                "role": "user",
                "name": "Zed",
                "id": "z1",
                "content": "The boiler in my flat was replaced on Tuesday.",
            }
        ],
        user_id="alice",
        session_id="s2",
        wait=True,
    )
    top = client.search("The boiler in my flat was replaced on Tuesday.", user_id="alice")[0]
    assert top.kind == "turn" and top.source_message_ids == ["z1"]
    assert top.content == "The boiler in my flat was replaced on Tuesday." and top.speaker == "Zed"


def test_add_is_idempotent(client: MemoryClient) -> None:
    first = client.add(CONVERSATION, user_id="bob", wait=True)
    again = client.add(CONVERSATION, user_id="bob", wait=True)
    assert first.result and again.result
    assert again.result.duplicates == 3 and again.result.created == {}
    assert len(client.list("bob", type="episodic", limit=500).items) == len(
        client.list("bob", type="episodic").items
    )
    turns = [m for m in client.list("bob", type="episodic").items if m.kind == "turn"]
    assert sorted(m.source_message_ids[0] for m in turns) == ["c1", "c2", "c3"]


def test_search_never_crosses_tenants_or_users(
    live_server: str, client: MemoryClient, tenant, database
) -> None:
    from memsvc.tenants import create_api_key

    secret = "My bank PIN is hidden under the blue vase in the hallway."
    client.add([{"role": "user", "content": secret, "id": "s1"}], user_id="owner", wait=True)
    with database.session() as session:
        other_key = create_api_key(session, f"other-{uuid.uuid4().hex[:8]}")
    with MemoryClient(live_server, other_key) as other:
        other.add([{"role": "user", "content": "I like tea.", "id": "o1"}], user_id="owner", wait=True)
        results = other.search(secret, user_id="owner", limit=100)
        assert results and all(secret != r.content for r in results)
        assert all(r.source_message_ids == ["o1"] or "tea" in r.content for r in results)
    # Same tenant, other user.
    client.add([{"role": "user", "content": "I like coffee.", "id": "x1"}], user_id="neighbour", wait=True)
    results = client.search(secret, user_id="neighbour", limit=100)
    assert results and all("PIN" not in r.content for r in results)
    # And the owner does find it.
    assert client.search(secret, user_id="owner")[0].content == secret


def test_update_delete_and_history(client: MemoryClient) -> None:
    added = client.add(CONVERSATION[:1], user_id="carol", wait=True)
    assert added.result
    turn_id = added.result.memory_ids[0]
    updated = client.update(
        turn_id, content="I went to a support group on Sunday.", metadata={"edited": True}, pinned=True
    )
    assert (
        updated.content == "I went to a support group on Sunday."
        and updated.pinned
        and updated.metadata == {"edited": True}
    )
    # The new content is what search finds now (it was re-embedded).
    assert client.search("support group on Sunday", "carol")[0].id == turn_id

    client.delete(turn_id)
    with pytest.raises(NotFoundError):
        client.get(turn_id)
    events = client.history(turn_id)
    assert [e.op for e in events] == ["create", "update", "delete"]
    assert events[1].after and events[1].after["pinned"] is True
    assert events[2].after is None
    # Deleted, it keeps what was done and when, not what it said or carried.
    assert not any("content" in (e.before or {}) or "metadata" in (e.after or {}) for e in events)


def test_delete_user_erases_exactly_that_user(client: MemoryClient, tenant, sql) -> None:
    ctx, _ = tenant
    client.add(CONVERSATION, user_id="erase-me", session_id="s", wait=True)
    client.add(CONVERSATION, user_id="keep-me", session_id="s", wait=True)
    before = _rows_of_user(sql, ctx.tenant_id, "erase-me")
    assert (
        before["memories"] > 0
        and before["memory_sources"] > 0
        and before["history"] > 0
        and before["jobs"] > 0
    )
    kept_before = _rows_of_user(sql, ctx.tenant_id, "keep-me")

    client.delete_user("erase-me")

    assert all(n == 0 for n in _rows_of_user(sql, ctx.tenant_id, "erase-me").values())
    assert _rows_of_user(sql, ctx.tenant_id, "keep-me") == kept_before
    assert client.search("support group", "erase-me") == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "user_id"),
        ({"messages": [], "user_id": "u"}, "messages"),
        ({"messages": "hello", "user_id": "u"}, "messages"),
        ({"messages": [{"role": "user", "content": 5}], "user_id": "u"}, "content"),
        ({"messages": [{"role": "robot", "content": "hi"}], "user_id": "u"}, "role"),
        ({"messages": [{"role": "user", "content": "x" * 40_000}], "user_id": "u"}, "limit"),
        ({"messages": [{"role": "user", "content": "   "}], "user_id": "u"}, "blank"),
        (
            {"messages": [{"role": "user", "content": "hi", "created_at": "yesterday"}], "user_id": "u"},
            "created_at",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "user_id": ""}, "user_id"),
    ],
)
def test_bad_add_gets_problem_json_and_writes_nothing(live_server: str, tenant, sql, body, fragment) -> None:
    before = _total_rows(sql)
    response = httpx.post(
        f"{live_server}/v1/memories", json=body, headers={"Authorization": f"Bearer {tenant[1]}"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 422 and problem["code"] == "invalid_input"
    assert fragment in problem["detail"].lower() or fragment in str(problem.get("errors", "")).lower()
    assert _total_rows(sql) == before


@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer msk_" + "a" * 40, "Basic abc"])
def test_bad_key_is_401_problem(live_server: str, sql, header) -> None:
    before = _total_rows(sql)
    headers = {"Authorization": header} if header else {}
    response = httpx.post(
        f"{live_server}/v1/memories",
        json={"messages": [{"role": "user", "content": "hi"}], "user_id": "u"},
        headers=headers,
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 401
    assert _total_rows(sql) == before


def test_sdk_raises_typed_errors(live_server: str, client: MemoryClient) -> None:
    with pytest.raises(AuthenticationError):
        MemoryClient(live_server, "msk_wrong").search("x", "u")
    with pytest.raises(NotFoundError):
        client.get(uuid.uuid4())
    with pytest.raises(BadRequest) as info:
        client.search("", "u")
    assert info.value.status_code == 422
    with pytest.raises(BadRequest):
        client.search("x", "u", filters={"colour": "red"})


def test_an_unknown_filter_kind_is_a_422_naming_the_kinds(live_server: str, tenant) -> None:
    """A kind no memory has would answer nothing, which reads as "no such memories"."""
    auth = {"Authorization": f"Bearer {tenant[1]}"}
    for kind in ("facts", "excerpt", "Fact"):
        body = {"query": "x", "user_id": "u", "filters": {"kind": kind}}
        response = httpx.post(f"{live_server}/v1/search", json=body, headers=auth)
        assert response.status_code == 422, (kind, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] == "invalid_input" and problem["errors"][0]["loc"] == ["body", "filters"]
        assert f"unknown kind '{kind}'" in problem["detail"]
        assert "turn, passage, session, fact, preference, plan, event, summary" in problem["detail"]
    body = {"query": "x", "user_id": "u", "filters": {"kind": "fact"}}
    assert httpx.post(f"{live_server}/v1/search", json=body, headers=auth).status_code == 200


def _forged(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def _forged_time(at: str, *listing: object) -> str:
    """A cursor of the listing `listing` names (`store._listing`), with a time of the caller's."""
    from memsvc.store import _listing

    return _forged(json.dumps([at, str(uuid.uuid4()), _listing(*listing)]).encode())


def test_a_cursor_pages_only_the_listing_that_gave_it(live_server: str, tenant) -> None:  # type: ignore[no-untyped-def]
    """A cursor of one user's list paged another's list from an unrelated place, silently."""
    auth = {"Authorization": f"Bearer {tenant[1]}"}
    with MemoryClient(live_server, tenant[1]) as client:
        for user in ("pages-a", "pages-b"):
            said = [{"role": "user", "content": f"I like {x}."} for x in ("tea", "jazz", "chess", "rain")]
            assert client.add(said, user, wait=True).status == "succeeded"
        mine = client.list("pages-a", limit=2)
        assert mine.next_cursor and client.list("pages-a", limit=2, cursor=mine.next_cursor).items
        jobs = httpx.get(f"{live_server}/v1/jobs?limit=1", headers=auth).json()["next_cursor"]
        users = httpx.get(f"{live_server}/v1/users?limit=1", headers=auth).json()["next_cursor"]
        history = httpx.get(f"{live_server}/v1/history?user_id=pages-a&limit=1", headers=auth).json()
        page = f"/v1/history?user_id=pages-a&limit=1&cursor={history['next_cursor']}"
        assert httpx.get(f"{live_server}{page}", headers=auth).json()["events"]  # its own listing pages
    for path in (
        f"/v1/history?user_id=pages-b&cursor={history['next_cursor']}",  # was a bare event id
        f"/v1/history?user_id=pages-a&run_id={uuid.uuid4()}&cursor={history['next_cursor']}",
        f"/v1/history?user_id=pages-a&cursor={mine.next_cursor}",
        f"/v1/memories?user_id=pages-b&limit=2&cursor={mine.next_cursor}",
        f"/v1/memories?user_id=pages-a&type=semantic&limit=2&cursor={mine.next_cursor}",
        f"/v1/memories?user_id=pages-a&cursor={jobs}",
        f"/v1/jobs?user_id=pages-a&cursor={jobs}",
        f"/v1/jobs?cursor={users}",
        f"/v1/users?cursor={mine.next_cursor}",
    ):
        response = httpx.get(f"{live_server}{path}", headers=auth)
        assert response.status_code == 422, (path, response.text)
        assert "cursor" in response.json()["detail"], (path, response.text)


def test_other_bad_inputs_are_4xx(live_server: str, tenant) -> None:
    auth = {"Authorization": f"Bearer {tenant[1]}"}
    cases = [
        ("GET", "/v1/memories/not-a-uuid", None),
        ("GET", "/v1/memories?user_id=u&cursor=garbage", None),
        ("GET", "/v1/memories?user_id=u&limit=0", None),
        ("GET", "/v1/memories", None),
        ("POST", "/v1/search", {"query": "x"}),
        ("POST", "/v1/search", {"query": "x", "user_id": "u", "limit": 1000}),
        ("POST", "/v1/search", {"query": "x", "user_id": "u", "as_of": "not a date"}),
        # The graph is its own endpoint: search says so instead of answering nothing.
        ("POST", "/v1/search", {"query": "x", "user_id": "u", "types": ["semantic", "entity"]}),
        ("PATCH", f"/v1/memories/{uuid.uuid4()}", {"content": "x"}),
        ("PATCH", f"/v1/memories/{uuid.uuid4()}", {"colour": "x"}),
        ("GET", f"/v1/jobs/{uuid.uuid4()}", None),
        ("GET", "/v1/graph?user_id=u&depth=9", None),
        # Forged cursors with values PostgreSQL cannot hold were 500s.
        ("GET", "/v1/history?user_id=u&cursor=9223372036854775808", None),
        ("GET", "/v1/history?user_id=u&cursor=-5", None),
        ("GET", f"/v1/users?cursor={_forged(b'a' + bytes(1) + b'b')}", None),
    ]
    # Of the right listing, with a time PostgreSQL cannot hold.
    memories = ("memories", tenant[0].tenant_id, "u", None, None, None, None, None)
    jobs = ("jobs", tenant[0].tenant_id, None, None, None)
    forged_times = [
        f"/v1/memories?user_id=u&cursor={_forged_time('0001-01-01T00:00:00+05:00', *memories)}",
        f"/v1/memories?user_id=u&cursor={_forged_time('2024-01-01T00:00:00', *memories)}",
        f"/v1/jobs?cursor={_forged_time('0001-01-01T00:00:00+05:00', *jobs)}",
    ]
    cases += [("GET", path, None) for path in forged_times]
    for method, path, body in cases:
        response = httpx.request(method, f"{live_server}{path}", json=body, headers=auth)
        assert 400 <= response.status_code < 500, (method, path, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), (method, path)
        if path in forged_times:
            assert response.json()["detail"] == "cursor is not one this server issued", response.text


def test_a_since_later_than_until_is_a_422_not_an_empty_page(live_server: str, tenant) -> None:
    """Swapped bounds answered an empty page, which a script reads as "nothing happened then"."""
    auth = {"Authorization": f"Bearer {tenant[1]}"}
    with MemoryClient(live_server, tenant[1]) as client:
        message = {"role": "user", "name": "Ann", "content": "I live in Lisbon.", "created_at": "2025-02-01"}
        assert client.add([message], "window", wait=True).status == "succeeded"
    listed = f"{live_server}/v1/memories?user_id=window"
    swapped = httpx.get(f"{listed}&since=2025-03-01&until=2025-01-01", headers=auth)
    assert swapped.status_code == 422, swapped.text
    assert swapped.headers["content-type"].startswith("application/problem+json")
    assert swapped.json()["errors"][0]["loc"] == ["query", "until"]
    # An empty window [t, t) is a question with an empty answer, not a mistake.
    assert httpx.get(f"{listed}&since=2025-02-01&until=2025-02-01", headers=auth).json()["items"] == []
    window = httpx.get(f"{listed}&since=2025-01-01&until=2025-03-01", headers=auth)
    assert window.status_code == 200 and window.json()["items"]


def test_health_ready_metrics_docs(live_server: str) -> None:
    assert httpx.get(f"{live_server}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{live_server}/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok" and ready.json()["model"] == "ok"
    assert "memsvc_http_requests_total" in httpx.get(f"{live_server}/metrics").text
    assert httpx.get(f"{live_server}/docs").status_code == 200
    spec = httpx.get(f"{live_server}/openapi.json").json()
    assert {"/v1/memories", "/v1/search", "/v1/context", "/v1/users/{user_id}", "/v1/jobs/{job_id}"} <= set(
        spec["paths"]
    )


def test_an_unexpected_failure_is_a_500_problem_and_the_connection_stays_open(
    live_server: str, tenant, service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette answers an unhandled exception and re-raises it, and the server then closed the
    client's keep-alive connection under it: the client's next request on it was reset."""

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "users", broken)
    host, port = live_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        reader = conn.makefile("rb")
        statuses = []
        for path in ("/v1/users", "/healthz"):
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {tenant[1]}\r\n\r\n"
            conn.sendall(request.encode())
            status = reader.readline().split()[1]
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = json.loads(reader.read(int(headers["content-length"])))
            statuses.append(int(status))
            if path == "/v1/users":
                assert headers["content-type"].startswith("application/problem+json")
                assert body["code"] == "internal" and "a bug" not in json.dumps(body)
                assert headers.get("x-request-id") and headers.get("connection") != "close"
    assert statuses == [500, 200]


def test_the_sdk_has_what_rest_has_explain_as_of_status_since_until(live_server: str, tenant) -> None:
    said = [
        ("I live in Lisbon.", datetime(2025, 1, 10, tzinfo=UTC), "k1"),
        ("I moved to Porto.", datetime(2025, 6, 10, tzinfo=UTC), "k2"),
    ]
    with MemoryClient(live_server, tenant[1]) as client:
        for content, when, mid in said:
            message = {"role": "user", "name": "Pia", "id": mid, "content": content, "created_at": when}
            assert client.add([message], "sdk-pia", wait=True).status == "succeeded"
        explained = client.search("Where does Pia live?", "sdk-pia", explain=True)
        assert explained and all("explain" in r.metadata for r in explained)
        assert all("explain" not in r.metadata for r in client.search("Where does Pia live?", "sdk-pia"))
        then = client.context("Where does Pia live?", "sdk-pia", as_of=datetime(2025, 3, 1, tzinfo=UTC))
        assert "Lisbon" in then.context and "Porto" not in then.context
        old = client.list("sdk-pia", status="superseded").items
        assert old and all(m.status == "superseded" for m in old)
        spring = client.list(
            "sdk-pia", since=datetime(2025, 1, 1, tzinfo=UTC), until=datetime(2025, 3, 1, tzinfo=UTC)
        )
        assert spring.items and all(
            m.event_at and m.event_at < datetime(2025, 3, 1, tzinfo=UTC) for m in spring.items
        )
        # One session's memories, paged by the server (a page of 1 at a time).
        message = {"role": "user", "name": "Pia", "content": "I got a dog named Rex."}
        assert client.add([message], "sdk-pia", session_id="dogs", wait=True).status == "succeeded"
        pages, cursor = [], None
        while True:
            page = client.list("sdk-pia", session_id="dogs", limit=1, cursor=cursor)
            pages.append(page.items)
            if not (cursor := page.next_cursor):
                break
        dogs = [m for items in pages for m in items]
        assert len(dogs) >= 2 and all(len(items) == 1 for items in pages[:-1])
        assert {m.session_id for m in dogs} == {"dogs"} and any("Rex" in m.content for m in dogs)
        everything = client.list("sdk-pia", limit=500).items
        assert {m.id for m in dogs} == {m.id for m in everything if m.session_id == "dogs"}

    async def the_async_client() -> None:
        async with AsyncMemoryClient(live_server, tenant[1]) as aclient:
            assert all(
                "explain" in r.metadata for r in await aclient.search("Porto", "sdk-pia", explain=True)
            )
            now = await aclient.context("Where does Pia live?", "sdk-pia")
            assert "Porto" in now.context
            assert (await aclient.list("sdk-pia", status="superseded")).items
            assert {m.session_id for m in (await aclient.list("sdk-pia", session_id="dogs")).items} == {
                "dogs"
            }

    asyncio.run(the_async_client())


def test_no_such_route_or_method_answers_a_documented_code(live_server: str, tenant) -> None:  # type: ignore[no-untyped-def]
    auth = {"Authorization": f"Bearer {tenant[1]}"}
    missing = httpx.get(f"{live_server}/v1/nothing-here", headers=auth)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong = httpx.put(f"{live_server}/v1/search", headers=auth, json={})
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]
    assert wrong.headers["content-type"].startswith("application/problem+json")
    # Each says what was asked (its detail was null).
    assert missing.json()["detail"].startswith("GET /v1/nothing-here: no such route")
    assert wrong.json()["detail"] == "PUT /v1/search: not allowed here; allowed: POST"


def test_a_body_of_another_media_type_is_415_and_one_too_large_413(live_server: str, tenant) -> None:  # type: ignore[no-untyped-def]
    auth = {"Authorization": f"Bearer {tenant[1]}"}
    body = json.dumps({"user_id": "u", "query": "where?"})
    for media in ("text/plain", "application/x-www-form-urlencoded"):
        answer = httpx.post(f"{live_server}/v1/search", headers={**auth, "content-type": media}, content=body)
        assert answer.status_code == 415 and answer.json()["code"] == "unsupported_media_type", answer.text
        assert "application/json" in answer.json()["detail"]
    # Declared larger than any valid request: refused before a byte is read (none is sent here).
    url = httpx.URL(live_server)
    with socket.create_connection((url.host, url.port), timeout=10) as raw:
        raw.sendall(
            f"POST /v1/search HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: {auth['Authorization']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {10**10}\r\n\r\n".encode()
        )
        answer = b""
        while not answer.endswith(b"}") and (chunk := raw.recv(65536)):  # the head, then the JSON body
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"application/problem+json" in head, head
    assert json.loads(rest)["code"] == "payload_too_large"
    # Sent in chunks without a length: read up to the limit, then handed to the route whole.
    chunked = httpx.post(
        f"{live_server}/v1/search",
        headers={**auth, "content-type": "application/json"},
        content=iter([body[:10].encode(), body[10:].encode()]),
    )
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert chunked.status_code == 200, chunked.text


def test_a_key_is_made_from_a_post_without_a_body(live_server: str, database) -> None:  # type: ignore[no-untyped-def]
    from memsvc.tenants import create_api_key

    with database.session() as session:
        admin = create_api_key(session, f"t-{uuid.uuid4().hex[:12]}", "ops", scopes=["admin"])
    made = httpx.post(f"{live_server}/v1/keys", headers={"Authorization": f"Bearer {admin}"})
    assert made.status_code == 201, made.text  # was 422 "body: Field required"
    assert made.json()["key"].startswith("msk_") and set(made.json()["scopes"]) == {"read", "write"}
