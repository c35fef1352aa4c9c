"""Hostile input through real HTTP: every request either gets a 4xx problem+json and writes nothing,
or is accepted and then readable, updatable and erasable by the same ids. Never a 5xx."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from memsvc.client import MemoryClient
from memsvc.schemas import AddRequest

BAD_TEXT = {"nul": "a\x00b", "surrogate": "a\ud800b"}


def _tenant_rows(sql: psycopg.Connection, tenant_id: uuid.UUID) -> dict[str, int]:
    """Rows of every table that holds tenant data (API keys aside: using one stamps it)."""
    tables = [
        r[0]
        for r in sql.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public'"
            " AND column_name = 'tenant_id' AND table_name <> 'api_keys'"
        ).fetchall()
    ]
    assert {"memories", "jobs", "history"} <= set(tables)
    return {
        t: sql.execute(f"SELECT count(*) FROM {t} WHERE tenant_id = %s", (tenant_id,)).fetchone()[0]
        for t in tables
    }


def _user_rows(sql: psycopg.Connection, tenant_id: uuid.UUID, user_id: str) -> int:
    tables = [
        r[0]
        for r in sql.execute(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name = 'user_id'"
        ).fetchall()
    ]
    return sum(
        sql.execute(
            f"SELECT count(*) FROM {t} WHERE tenant_id = %s AND user_id = %s", (tenant_id, user_id)
        ).fetchone()[0]
        for t in tables
    )


def _send(live_server: str, key: str, method: str, path: str, body: Any = None, raw: bytes | None = None):
    """A request with a JSON body written by `json.dumps` (which escapes NUL and lone surrogates as
    JSON allows), or the raw bytes given."""
    content = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    return httpx.request(
        method,
        f"{live_server}{path}",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=60,
    )


def _assert_problem(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    if status == 422:  # every 422 names its fields (loc [] for a rule about the whole request)
        assert problem["errors"] and all({"loc", "msg", "type"} <= set(e) for e in problem["errors"])
    text = (problem["detail"] or "") + json.dumps(problem.get("errors"))
    for fragment in fragments:
        assert fragment in text, (fragment, problem)
    return problem


def _add_body() -> dict[str, Any]:
    return {
        "messages": [
            {
                "role": "user",
                "content": "I adopted a grey cat called Miso.",
                "name": "Ann",
                "id": "h1",
                "created_at": "2024-01-01T10:00:00Z",
            }
        ],
        "user_id": "u",
        "agent_id": "agent",
        "session_id": "s",
        "metadata": {"k": "v", "nested": {"list": ["x"]}},
    }


def _search_body() -> dict[str, Any]:
    return {
        "query": "cat",
        "user_id": "u",
        "filters": {"agent_id": "a", "session_id": "s", "kind": "turn", "metadata": {"k": "v"}},
    }


def _at(body: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return body


def _bad_key(body: dict[str, Any], path: list[Any], bad: str) -> dict[str, Any]:
    target = body
    for step in path:
        target = target[step]
    target[f"key-{bad}"] = 1
    return body


# (method, path, body with the bad text put in, field the problem must name)
FIELDS: list[tuple[str, str, Callable[[str], dict[str, Any]], str]] = [
    *[
        ("POST", "/v1/memories", lambda bad, p=p: _at(_add_body(), p, bad), name)
        for p, name in [
            (["messages", 0, "content"], "content"),
            (["messages", 0, "name"], "name"),
            (["messages", 0, "id"], "id"),
            (["user_id"], "user_id"),
            (["agent_id"], "agent_id"),
            (["session_id"], "session_id"),
            (["metadata", "k"], "metadata"),
            (["metadata", "nested", "list", 0], "metadata"),
        ]
    ],
    ("POST", "/v1/memories", lambda bad: _bad_key(_add_body(), ["metadata", "nested"], bad), "metadata"),
    *[
        ("POST", "/v1/search", lambda bad, p=p: _at(_search_body(), p, bad), name)
        for p, name in [
            (["query"], "query"),
            (["user_id"], "user_id"),
            (["filters", "agent_id"], "filters"),
            (["filters", "session_id"], "filters"),
            (["filters", "kind"], "filters"),
            (["filters", "metadata", "k"], "filters"),
        ]
    ],
    ("POST", "/v1/search", lambda bad: _bad_key(_search_body(), ["filters", "metadata"], bad), "filters"),
    ("POST", "/v1/context", lambda bad: {"query": bad, "user_id": "u"}, "query"),
    ("POST", "/v1/context", lambda bad: {"query": "cat", "user_id": bad}, "user_id"),
]


@pytest.mark.parametrize("kind", sorted(BAD_TEXT))
@pytest.mark.parametrize(("method", "path", "make", "field"), FIELDS)
def test_nul_and_lone_surrogates_are_422_naming_the_field(
    live_server: str, tenant, sql, kind: str, method: str, path: str, make, field: str
) -> None:
    ctx, key = tenant
    before = _tenant_rows(sql, ctx.tenant_id)
    response = _send(live_server, key, method, path, make(BAD_TEXT[kind]))
    _assert_problem(response, 422, field)
    assert _tenant_rows(sql, ctx.tenant_id) == before


def test_bad_text_in_an_update_is_422_and_changes_nothing(
    client: MemoryClient, live_server, tenant, service
) -> None:
    added = client.add(_add_body()["messages"], user_id="u", wait=True)
    assert added.result
    memory_id = added.result.memory_ids[0]
    before = client.get(memory_id)
    for bad in BAD_TEXT.values():
        for body, field in [
            ({"content": bad}, "content"),
            ({"metadata": {"a": [bad]}}, "metadata"),
            ({"metadata": {bad: 1}}, "metadata"),
        ]:
            _assert_problem(
                _send(live_server, tenant[1], "PATCH", f"/v1/memories/{memory_id}", body), 422, field
            )
    _assert_problem(
        _send(live_server, tenant[1], "PATCH", f"/v1/memories/{memory_id}", {"content": " \t\n"}),
        422,
        "blank",
    )
    too_long = {"content": "x" * (service.settings.max_content_chars + 1)}  # the limit an add has
    problem = _assert_problem(
        _send(live_server, tenant[1], "PATCH", f"/v1/memories/{memory_id}", too_long), 422, "content"
    )
    assert problem["errors"][0]["loc"] == ["body", "content"]
    # JSON's true or false, not what Python would read as one ("yes", 1, "true").
    for truthy in ("yes", 1, "true"):
        _assert_problem(
            _send(live_server, tenant[1], "PATCH", f"/v1/memories/{memory_id}", {"pinned": truthy}),
            422,
            "pinned",
        )
    assert client.get(memory_id) == before
    assert [e.op for e in client.history(memory_id)] == ["create"]


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/memories?user_id=a%00b", "user_id"),
        ("GET", "/v1/memories?user_id=u&cursor=%00", "cursor"),
        ("GET", "/v1/graph?user_id=a%00b", "user_id"),
        ("GET", "/v1/graph?user_id=u&entity=%00", "entity"),
        ("DELETE", "/v1/users/a%00b", "user_id"),
    ],
)
def test_nul_in_query_and_path_parameters_is_422(live_server: str, tenant, sql, method, path, field) -> None:
    ctx, key = tenant
    before = _tenant_rows(sql, ctx.tenant_id)
    _assert_problem(_send(live_server, key, method, path), 422, field)
    assert _tenant_rows(sql, ctx.tenant_id) == before


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", f"/v1/memories?user_id=u&limit={10**30}", None, "limit"),
        ("GET", f"/v1/memories?user_id=u&limit=-{10**30}", None, "limit"),
        ("GET", f"/v1/graph?user_id=u&depth={10**30}", None, "depth"),
        ("POST", "/v1/search", {"query": "x", "user_id": "u", "limit": 10**30}, "limit"),
        ("POST", "/v1/search", {"query": "x", "user_id": "u", "limit": 1e300}, "limit"),
        ("POST", "/v1/context", {"query": "x", "user_id": "u", "max_tokens": 10**30}, "max_tokens"),
    ],
)
def test_huge_numbers_in_bounded_parameters_are_422(
    live_server: str, tenant, method, path, body, field
) -> None:
    _assert_problem(_send(live_server, tenant[1], method, path, body), 422, field)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"query": "x", "user_id": "u", "limit": NaN}', "limit"),
        (b'{"query": "x", "user_id": "u", "limit": Infinity}', "limit"),
        (b'{"query": "x", "user_id": "u", "filters": {"metadata": {"k": NaN}}}', "NaN"),
        (b'{"query": "x", "user_id": "u", "filters": {"metadata": {"k": 1e999}}}', "Infinity"),
    ],
)
def test_nan_and_infinity_are_422(live_server: str, tenant, raw: bytes, fragment: str) -> None:
    _assert_problem(_send(live_server, tenant[1], "POST", "/v1/search", raw=raw), 422, fragment)


@pytest.mark.parametrize("number", [b"NaN", b"-Infinity", b"1e999"])
def test_nan_and_infinity_in_metadata_are_422_and_write_nothing(live_server, tenant, sql, number) -> None:
    ctx, key = tenant
    before = _tenant_rows(sql, ctx.tenant_id)
    raw = json.dumps(_add_body()).replace('"v"', "__N__").encode().replace(b"__N__", number)
    _assert_problem(_send(live_server, key, "POST", "/v1/memories", raw=raw), 422, "metadata", "Infinity")
    assert _tenant_rows(sql, ctx.tenant_id) == before


def test_huge_integers_in_metadata_are_stored_and_read_back(client: MemoryClient) -> None:
    metadata = {"big": 10**30, "negative": -(10**40), "in": [{"list": [2**70]}], "small": 0.1}
    added = client.add(_add_body()["messages"], user_id="numbers", metadata=metadata, wait=True)
    assert added.status == "succeeded" and added.result
    memory_id = added.result.memory_ids[0]
    assert client.get(memory_id).metadata == metadata
    updated = client.update(memory_id, metadata={"big": -(10**30)})
    assert updated.metadata == {"big": -(10**30)} == client.get(memory_id).metadata
    hits = client.search("grey cat Miso", "numbers", filters={"metadata": {"big": -(10**30)}})
    assert memory_id in {h.id for h in hits} and all(h.metadata == {"big": -(10**30)} for h in hits)
    client.delete(memory_id)


def test_a_number_too_long_to_parse_is_400(live_server: str, tenant) -> None:
    raw = b'{"query": "x", "user_id": "u", "limit": ' + b"9" * 5000 + b"}"
    _assert_problem(
        _send(live_server, tenant[1], "POST", "/v1/search", raw=raw), 400, "not valid JSON", "digits"
    )


@pytest.mark.parametrize("path", ["/v1/search", "/v1/memories", "/v1/context"])
def test_deeply_nested_json_is_400_and_the_server_lives_on(live_server: str, tenant, path: str) -> None:
    for raw in (b"[" * 100_000, b'{"a":' * 100_000, b"[" * 100_000 + b"]" * 100_000):
        _assert_problem(_send(live_server, tenant[1], "POST", path, raw=raw), 400, "nested too deeply")
    assert httpx.get(f"{live_server}/healthz").json() == {"status": "ok"}


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"a": value}
    return value


def test_metadata_depth_and_size_are_bounded(client: MemoryClient, live_server, tenant, sql) -> None:
    ctx, key = tenant
    before = _tenant_rows(sql, ctx.tenant_id)
    for metadata, fragment in [
        (_nested(40), "nested deeper than 32"),
        ({"a": json.loads("[" * 40 + "]" * 40)}, "nested deeper than 32"),
        ({"big": "x" * 70_000}, "bytes as JSON"),
    ]:
        body = {**_add_body(), "metadata": metadata}
        _assert_problem(_send(live_server, key, "POST", "/v1/memories", body), 422, "metadata", fragment)
    # Deep structure elsewhere (a field that wants a string, an unknown field) is a plain 422.
    for body in [{"query": _nested(500), "user_id": "u"}, {"query": "x", "user_id": "u", "x": _nested(500)}]:
        _assert_problem(
            _send(live_server, key, "POST", "/v1/search", body), 422, "query" if "x" not in body else "x"
        )
    assert _tenant_rows(sql, ctx.tenant_id) == before

    added = client.add(_add_body()["messages"], user_id="deep", metadata=_nested(32), wait=True)
    assert added.result
    assert client.get(added.result.memory_ids[0]).metadata == _nested(32)


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        (b'{"query": "x",\n  "user_id": }', ["Expecting value", "line 2, column 14"]),
        (b'{"query": "x", "user_id": "u"} trailing', ["Extra data", "line 1, column 32"]),
        (b"{'query': 'x'}", ["property name", "line 1, column 2"]),
        (b'{"query": "x", "user_id": "u"', ["line 1"]),
        (b"\xff\xfe\x00garbage", []),
    ],
)
def test_invalid_json_is_400_saying_where(live_server: str, tenant, raw: bytes, fragments: list[str]) -> None:
    for path in ("/v1/search", "/v1/memories"):
        problem = _assert_problem(_send(live_server, tenant[1], "POST", path, raw=raw), 400, *fragments)
        assert problem["detail"].startswith("request body is not valid JSON: ")
        assert problem["code"] == "invalid_json"


@pytest.mark.parametrize("raw", [b"{bad", b"[" * 100_000, b"\xff\xfe\x00garbage"])
def test_a_body_that_is_not_json_is_refused_for_the_key_first(
    live_server: str, database, tenant, raw: bytes
) -> None:
    """No key, a wrong one or one without the route's scope learns that (401, 403), not how its
    body failed to parse: FastAPI reads the body before the key is checked."""
    from memsvc.tenants import create_api_key

    with database.session() as session:
        reader = create_api_key(session, f"t-{uuid.uuid4().hex[:12]}", "reader", scopes=["read"])
    no_key = httpx.post(f"{live_server}/v1/search", content=raw, headers={"Content-Type": "application/json"})
    problem = _assert_problem(no_key, 401)
    assert problem["code"] == "unauthorized" and no_key.headers["WWW-Authenticate"] == "Bearer"
    for path in ("/v1/search", "/v1/memories", "/v1/keys"):
        assert _send(live_server, "msk_not-a-key", "POST", path, raw=raw).status_code == 401, path
    _assert_problem(_send(live_server, reader, "POST", "/v1/memories", raw=raw), 403, "'write'")
    _assert_problem(_send(live_server, reader, "POST", "/v1/search", raw=raw), 400, "not valid JSON")
    _assert_problem(_send(live_server, tenant[1], "POST", "/v1/memories", raw=raw), 400, "not valid JSON")


def test_a_time_without_timezone_is_utc(client: MemoryClient, live_server, tenant) -> None:
    message = {**_add_body()["messages"][0], "created_at": "2024-03-01T10:00:00"}
    added = client.add([message], user_id="naive", wait=True)
    assert added.result
    memory = client.get(added.result.memory_ids[0])
    assert memory.event_at is not None and memory.event_at.isoformat() == "2024-03-01T10:00:00+00:00"
    # A naive `as_of` is UTC as well; one with an offset keeps it.
    for as_of, expect in [
        ("2024-03-01T10:00:01", True),
        ("2024-03-01T09:59:59", False),
        ("2024-03-01T11:00:00+01:00", True),
    ]:
        body = {"query": "grey cat", "user_id": "naive", "as_of": as_of, "types": ["episodic"]}
        response = _send(live_server, tenant[1], "POST", "/v1/search", body)
        assert response.status_code == 200, response.text
        assert bool(response.json()["results"]) is expect, as_of
        context = _send(
            live_server,
            tenant[1],
            "POST",
            "/v1/context",
            {"query": "cat", "user_id": "naive", "as_of": as_of},
        )
        assert context.status_code == 200, context.text


# The year is the UTC instant's: "0002-01-01T00:00+05:00" is year 1 and was once stored, after
# which every search of that user failed on PostgreSQL's year 1 BC.
@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00",
        "2024-13-01T00:00:00",
        "0002-01-01T00:00:00+05:00",
        "9998-12-31T23:00:00-05:00",
    ],
)
def test_times_at_the_ends_of_the_calendar_are_422(live_server: str, tenant, sql, when: str) -> None:
    ctx, key = tenant
    before = _tenant_rows(sql, ctx.tenant_id)
    body = _add_body()
    body["messages"][0]["created_at"] = when
    _assert_problem(_send(live_server, key, "POST", "/v1/memories", body), 422, "created_at")
    _assert_problem(
        _send(live_server, key, "POST", "/v1/search", {"query": "x", "user_id": "u", "as_of": when}),
        422,
        "as_of",
    )
    assert _tenant_rows(sql, ctx.tenant_id) == before


@pytest.mark.parametrize(
    ("when", "content"),
    [
        ("9998-06-01T00:00:00Z", "In two years I will retire."),
        ("0002-06-01T00:00:00Z", "Two years ago I lived in Oslo."),
    ],
)
def test_a_relative_date_past_the_calendar_is_left_unresolved(
    live_server: str, tenant, when, content
) -> None:
    # "In two years", said in 9998, is year 10000: the batch is stored, the phrase kept as said.
    body = _add_body()
    body.update(user_id="edge", wait=True)
    body["messages"][0].update(created_at=when, content=content)
    added = _send(live_server, tenant[1], "POST", "/v1/memories", body)
    assert added.status_code == 201, added.text
    assert added.json()["status"] == "succeeded", added.text
    for path in ("/v1/search", "/v1/context"):
        response = _send(live_server, tenant[1], "POST", path, {"query": "where", "user_id": "edge"})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("query", ["", " ", " \t\n\r ", "\u3000"])
@pytest.mark.parametrize("path", ["/v1/search", "/v1/context"])
def test_blank_query_is_422(live_server: str, tenant, path: str, query: str) -> None:
    _assert_problem(
        _send(live_server, tenant[1], "POST", path, {"query": query, "user_id": "u"}), 422, "query"
    )


# Each id with a neighbour that a wrong parse of it (a path cut at `/`, `?` or `#`, a decoded `%2F`)
# would hit instead.
USER_IDS = [
    ("org/team/alice", "org"),
    ("victim?x=1", "victim"),
    ("a?b", "a"),
    ("a#b", "a"),
    ("a%2Fb", "a/b"),
    ("100%", "100"),
    ("..", "."),
    ("/lead/and/trail/", "lead"),
    ("Zoë 用户 🙂/x", "Zoë 用户 🙂"),
]


@pytest.mark.parametrize(("user_id", "neighbour"), USER_IDS)
def test_user_ids_with_url_characters_live_and_die_by_the_sdk(
    client: MemoryClient, tenant, sql, user_id: str, neighbour: str
) -> None:
    ctx, _ = tenant
    messages = _add_body()["messages"]
    client.add(messages, user_id=neighbour, wait=True)
    added = client.add(messages, user_id=user_id, session_id=f"s/{user_id}?", wait=True)
    assert added.status == "succeeded" and added.result
    memory_id = added.result.memory_ids[0]

    listed = client.list(user_id).items
    assert memory_id in {m.id for m in listed} and {m.user_id for m in listed} == {user_id}
    hits = client.search("grey cat Miso", user_id, filters={"session_id": f"s/{user_id}?"})
    assert hits and all(h.source_message_ids == ["h1"] for h in hits)
    assert client.context("cat", user_id).items
    client.graph(user_id)
    assert client.update(memory_id, pinned=True).pinned

    neighbour_rows = _user_rows(sql, ctx.tenant_id, neighbour)
    client.delete_user(user_id)
    assert _user_rows(sql, ctx.tenant_id, user_id) == 0
    assert _user_rows(sql, ctx.tenant_id, neighbour) == neighbour_rows > 0
    assert client.list(user_id).items == []
    assert client.list(neighbour).items


@pytest.mark.parametrize(("user_id", "neighbour"), [u for u in USER_IDS if u[0] != ".."])
def test_user_ids_with_url_characters_by_raw_http(live_server: str, tenant, sql, user_id, neighbour) -> None:
    ctx, key = tenant
    for uid in (neighbour, user_id):
        body = {**_add_body(), "user_id": uid, "wait": True}
        assert _send(live_server, key, "POST", "/v1/memories", body).status_code == 201
    listed = _send(live_server, key, "GET", f"/v1/memories?user_id={quote(user_id, safe='')}").json()
    assert listed["items"] and {m["user_id"] for m in listed["items"]} == {user_id}
    neighbour_rows = _user_rows(sql, ctx.tenant_id, neighbour)

    response = _send(live_server, key, "DELETE", f"/v1/users/{quote(user_id, safe='')}")
    assert response.status_code == 204, response.text
    assert _user_rows(sql, ctx.tenant_id, user_id) == 0
    assert _user_rows(sql, ctx.tenant_id, neighbour) == neighbour_rows > 0


def test_empty_user_id_in_the_path_is_422(live_server: str, tenant) -> None:
    _assert_problem(_send(live_server, tenant[1], "DELETE", "/v1/users/"), 422, "user_id")


@pytest.mark.parametrize("field", ["user_id", "agent_id", "session_id"])
@pytest.mark.parametrize("bad", ["a\u0007b", "  ", "line\nbreak", "\u200b\u2028"])
def test_an_add_with_a_blank_or_unprintable_scope_id_is_422(
    live_server: str, tenant, sql, field, bad
) -> None:
    ctx, key = tenant
    before = _tenant_rows(sql, ctx.tenant_id)
    _assert_problem(_send(live_server, key, "POST", "/v1/memories", {**_add_body(), field: bad}), 422, field)
    assert _tenant_rows(sql, ctx.tenant_id) == before


def test_two_messages_under_one_client_id_are_422_and_one_sent_twice_is_one(
    live_server: str, tenant, sql
) -> None:
    ctx, key = tenant
    before = _tenant_rows(sql, ctx.tenant_id)
    clash = {"user_id": "ids", "messages": [
        {"role": "user", "id": "m1", "content": "I live in Lisbon."},
        {"role": "user", "id": "m1", "content": "I live in Porto."},
    ]}  # fmt: skip
    problem = _assert_problem(_send(live_server, key, "POST", "/v1/memories", clash), 422, "messages")
    assert "'m1'" in problem["detail"] + json.dumps(problem.get("errors"))
    assert _tenant_rows(sql, ctx.tenant_id) == before
    twice = {**clash, "messages": [clash["messages"][0]] * 2, "wait": True}
    added = _send(live_server, key, "POST", "/v1/memories", twice)
    assert added.status_code == 201, added.text
    turns = sql.execute(
        "SELECT count(*) FROM memories WHERE tenant_id = %s AND user_id = 'ids' AND kind = 'turn'",
        (ctx.tenant_id,),
    ).fetchone()
    assert turns == (1,)


def test_an_id_stored_before_the_printable_rule_can_still_be_read_and_erased(
    live_server: str, tenant, sql, service
) -> None:
    ctx, key = tenant
    old = "bell\u0007user"
    added = AddRequest(messages=_add_body()["messages"], user_id="placeholder")
    assert service.run_ingest_job(service.submit_ingest(ctx, added)).status == "succeeded"
    # Renamed as an earlier server would have stored it: the rule is on what a request brings in.
    tables = sql.execute(
        "SELECT table_name FROM information_schema.columns WHERE column_name = 'user_id'"
        " AND table_schema = current_schema() AND table_name IN"
        " (SELECT table_name FROM information_schema.columns WHERE column_name = 'tenant_id')"
    ).fetchall()
    for (table,) in tables:
        sql.execute(
            f'UPDATE "{table}" SET user_id = %s WHERE tenant_id = %s AND user_id = %s',
            (old, ctx.tenant_id, "placeholder"),
        )
    listed = _send(live_server, key, "GET", f"/v1/memories?user_id={quote(old, safe='')}")
    assert listed.status_code == 200 and listed.json()["items"]
    assert _send(live_server, key, "DELETE", f"/v1/users/{quote(old, safe='')}").status_code == 204
    assert _user_rows(sql, ctx.tenant_id, old) == 0


def test_an_add_past_the_service_limits_is_422_naming_the_field(live_server, tenant, service) -> None:  # type: ignore[no-untyped-def]
    long = _add_body()
    long["messages"][0]["content"] = "x" * (service.settings.max_content_chars + 1)
    problem = _assert_problem(_send(live_server, tenant[1], "POST", "/v1/memories", long), 422, "limit")
    assert problem["errors"][0]["loc"] == ["body", "messages", 0, "content"]
    many = _add_body()
    many["messages"] = [
        {"role": "user", "content": f"message {i}"}
        for i in range(service.settings.max_messages_per_request + 1)
    ]
    problem = _assert_problem(
        _send(live_server, tenant[1], "POST", "/v1/memories", many), 422, "messages per"
    )
    assert problem["errors"][0]["loc"] == ["body", "messages"]
