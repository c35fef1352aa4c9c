"""Tenant isolation and key scopes, through real HTTP, on every route the app serves.

`ROUTES` must name every route of the app (`test_every_route_is_in_the_table` fails otherwise), so
a new endpoint cannot escape the checks below: another tenant's key reaches nothing of tenant A,
a key without the route's scope gets 403, a revoked or missing key 401.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from fastapi import routing
from starlette.routing import Mount

from memsvc.api.routes import docs
from memsvc.api.routes.ui import ASSETS
from memsvc.schemas import KeyScope

# Words no other test uses, so finding one in an answer to tenant B means it came from tenant A.
A_WORDS = ("Quillondra", "Vextorburg", "zephyrcake", "Marnivelle")
A_SPEAKER, A_MESSAGES = (
    "Quillondra",
    [
        "I moved to Vextorburg last spring with my sister Marnivelle.",
        "I baked a zephyrcake for the Vextorburg market on Sunday.",
        "My sister Marnivelle works at the Vextorburg hospital.",
    ],
)
B_SPEAKER, B_MESSAGES = (
    "Tobias",
    [
        "I moved to Lisbon in March and I work at a bookshop.",
        "I play chess with my brother Ruben every Friday.",
    ],
)


@dataclass(frozen=True)
class Ids:
    """What one tenant's requests name: a user, memories, a job, a key, entities."""

    user_id: str
    memory_ids: list[str]
    logged_ids: list[str]  # memories with history (a session digest has none)
    job_id: str
    key_id: str
    entities: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Call:
    path: str
    params: dict[str, Any] | None = None
    json: dict[str, Any] | None = None

    def text(self) -> str:
        return f"{self.path} {json.dumps(self.params)} {json.dumps(self.json)}"


@dataclass(frozen=True)
class Probe:
    """How to call one route and what it may answer.

    `foreign`: statuses when tenant B's admin key names tenant A's ids. `fresh`: statuses when a
    key with the scope names ids that exist nowhere (write and admin routes: a real target would
    be changed). `empty`: what a 200 to B about A's ids must look like. `phase`: reads before
    writes before erasures, so that no call changes what a later one sees.
    """

    scope: KeyScope
    calls: Callable[[Ids], list[Call]]
    foreign: frozenset[int]
    fresh: frozenset[int] = frozenset({200})
    empty: Callable[[Any], bool] = lambda _: True
    phase: int = 0


def _user(ids: Ids) -> str:
    return quote(ids.user_id, safe="")


ROUTES: dict[tuple[str, str], Probe] = {
    ("GET", "/v1/memories"): Probe(
        "read",
        lambda i: [
            Call("/v1/memories", {"user_id": i.user_id}),
            Call("/v1/memories", {"user_id": i.user_id, "type": "semantic", "limit": 500}),
        ],
        foreign=frozenset({200}),
        empty=lambda body: body["items"] == [],
    ),
    ("GET", "/v1/memories/{memory_id}"): Probe(
        "read", lambda i: [Call(f"/v1/memories/{m}") for m in i.memory_ids], foreign=frozenset({404})
    ),
    ("GET", "/v1/memories/{memory_id}/history"): Probe(
        "read",
        lambda i: [Call(f"/v1/memories/{m}/history") for m in i.logged_ids],
        foreign=frozenset({404}),
    ),
    ("POST", "/v1/search"): Probe(
        "read",
        lambda i: [
            Call("/v1/search", json={"query": "Where does Quillondra live?", "user_id": i.user_id}),
            Call("/v1/search", json={"query": "what does she bake", "user_id": i.user_id, "limit": 100}),
        ],
        foreign=frozenset({200}),
        empty=lambda body: body["results"] == [],
    ),
    ("POST", "/v1/context"): Probe(
        "read",
        lambda i: [Call("/v1/context", json={"query": "Where does Quillondra live?", "user_id": i.user_id})],
        foreign=frozenset({200}),
        empty=lambda body: body["items"] == [],
    ),
    ("GET", "/v1/graph"): Probe(
        "read",
        lambda i: [
            Call("/v1/graph", {"user_id": i.user_id}),
            *(Call("/v1/graph", {"user_id": i.user_id, "entity": e, "depth": 3}) for e in i.entities),
        ],
        foreign=frozenset({200, 404}),
        empty=lambda body: body["entities"] == [] and body["relations"] == [],
    ),
    ("GET", "/v1/jobs/{job_id}"): Probe(
        "read", lambda i: [Call(f"/v1/jobs/{i.job_id}")], foreign=frozenset({404})
    ),
    ("GET", "/v1/jobs"): Probe(
        "read",
        lambda i: [
            Call("/v1/jobs", {"user_id": i.user_id}),
            Call("/v1/jobs", {"user_id": i.user_id, "status": "succeeded", "kind": "ingest"}),
        ],
        foreign=frozenset({200}),
        empty=lambda body: body["jobs"] == [],
    ),
    # The caller's own user ids only: A's user id is among the markers a leak would show.
    ("GET", "/v1/users"): Probe(
        "read", lambda i: [Call("/v1/users"), Call("/v1/users", {"limit": 500})], foreign=frozenset({200})
    ),
    ("GET", "/v1/history"): Probe(
        "read",
        lambda i: [
            Call("/v1/history", {"user_id": i.user_id}),
            Call("/v1/history", {"user_id": i.user_id, "run_id": i.job_id, "limit": 500}),
        ],
        foreign=frozenset({200}),
        empty=lambda body: body["events"] == [],
    ),
    ("GET", "/v1/keys"): Probe("admin", lambda i: [Call("/v1/keys")], foreign=frozenset({200})),
    ("POST", "/v1/memories"): Probe(
        "write",
        # B's message reuses the user id and a message id of A: A's copy must not make it a duplicate.
        lambda i: [
            Call(
                "/v1/memories",
                json={
                    "user_id": i.user_id,
                    "wait": True,
                    "messages": [{"role": "user", "id": "m1", "content": "B writes this."}],
                },
            )
        ],
        foreign=frozenset({201}),
        fresh=frozenset({201}),
        phase=1,
    ),
    ("POST", "/v1/memories/{memory_id}/restore"): Probe(
        "write",
        lambda i: [Call(f"/v1/memories/{m}/restore") for m in i.memory_ids],
        foreign=frozenset({404}),
        fresh=frozenset({404}),
        phase=1,
    ),
    # Runs in the background: the tests wait for the tenant's jobs before they compare rows.
    ("POST", "/v1/consolidate"): Probe(
        "write",
        lambda i: [Call("/v1/consolidate", json={"user_id": i.user_id})],
        foreign=frozenset({202}),
        fresh=frozenset({202}),
        phase=1,
    ),
    ("PATCH", "/v1/memories/{memory_id}"): Probe(
        "write",
        lambda i: [
            Call(f"/v1/memories/{m}", json={"content": "overwritten by B", "pinned": True})
            for m in i.memory_ids
        ],
        foreign=frozenset({404}),
        fresh=frozenset({404}),
        phase=1,
    ),
    ("POST", "/v1/keys"): Probe(
        "admin",
        lambda i: [Call("/v1/keys", json={"name": "probe", "scopes": ["read"]})],
        foreign=frozenset({201}),
        fresh=frozenset({201}),
        phase=1,
    ),
    ("POST", "/v1/keys/{key_id}/rotate"): Probe(
        "admin",
        lambda i: [Call(f"/v1/keys/{i.key_id}/rotate", json={"grace_seconds": 0})],
        foreign=frozenset({404}),
        fresh=frozenset({404}),
        phase=1,
    ),
    ("DELETE", "/v1/memories/{memory_id}"): Probe(
        "write",
        lambda i: [Call(f"/v1/memories/{m}") for m in i.memory_ids],
        foreign=frozenset({404}),
        fresh=frozenset({404}),
        phase=2,
    ),
    ("DELETE", "/v1/keys/{key_id}"): Probe(
        "admin",
        lambda i: [Call(f"/v1/keys/{i.key_id}")],
        foreign=frozenset({404}),
        fresh=frozenset({404}),
        phase=2,
    ),
    # Erasing "A's" user id from B's tenant erases B's own rows of that id (made above), never A's.
    ("DELETE", "/v1/users/{user_id}"): Probe(
        "write",
        lambda i: [Call(f"/v1/users/{_user(i)}")],
        foreign=frozenset({204}),
        fresh=frozenset({204}),
        phase=3,
    ),
}
# Routes without a key: for orchestrators, scrapers and people reading the docs.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    *(("GET", f"/docs/{name}") for name in docs.FILES),
    # The web console's page and assets: static, no data (it calls the API with the user's key).
    ("GET", "/ui"),
    *(("GET", f"/ui/{p.name}") for p in ASSETS.iterdir() if p.name != "index.html"),
}


def _ordered() -> list[tuple[tuple[str, str], Probe]]:
    return sorted(ROUTES.items(), key=lambda item: item[1].phase)


def _send(base: str, key: str | None, method: str, call: Call) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.request(
        method, base + call.path, params=call.params, json=call.json, headers=headers, timeout=120
    )


def _fresh_ids() -> Ids:
    return Ids(
        user_id=f"nobody-{uuid.uuid4().hex[:8]}",
        memory_ids=[str(uuid.uuid4())],
        logged_ids=[str(uuid.uuid4())],
        job_id=str(uuid.uuid4()),
        key_id=str(uuid.uuid4()),
        entities=["Nobody"],
    )


@dataclass
class Tenant:
    name: str
    admin_key: str
    ids: Ids
    markers: list[str]
    tenant_id: uuid.UUID


def _make_tenant(  # type: ignore[no-untyped-def]
    base: str, database, sql: psycopg.Connection, label: str, speaker: str, texts: list[str]
) -> Tenant:
    from memsvc.tenants import create_api_key

    name = f"iso-{label}-{uuid.uuid4().hex[:8]}"
    with database.session() as session:
        admin = create_api_key(session, name, "admin", scopes=["admin"])
        create_api_key(session, name, "reader", scopes=["read"])
    user_id = f"{label}-user-{uuid.uuid4().hex[:8]}"
    auth = {"Authorization": f"Bearer {admin}"}
    messages = [
        {"role": "user", "name": speaker, "id": f"m{n}", "content": text} for n, text in enumerate(texts, 1)
    ]
    added = httpx.post(
        base + "/v1/memories",
        json={"user_id": user_id, "session_id": "s1", "messages": messages, "wait": True},
        headers=auth,
        timeout=300,
    )
    assert added.status_code == 201, added.text
    listed = httpx.get(base + "/v1/memories", params={"user_id": user_id, "limit": 500}, headers=auth)
    graph = httpx.get(base + "/v1/graph", params={"user_id": user_id}, headers=auth).json()
    keys = httpx.get(base + "/v1/keys", headers=auth).json()["keys"]
    tenant_id = sql.execute("SELECT id FROM tenants WHERE name = %s", (name,)).fetchone()[0]
    logged = sql.execute("SELECT DISTINCT memory_id::text FROM history WHERE tenant_id = %s", (tenant_id,))
    ids = Ids(
        user_id=user_id,
        memory_ids=[m["id"] for m in listed.json()["items"]],
        logged_ids=[r[0] for r in logged.fetchall()],
        job_id=added.json()["job_id"],
        key_id=next(k["id"] for k in keys if k["name"] == "reader"),
        entities=[e["name"] for e in graph["entities"]],
    )
    assert ids.memory_ids and ids.logged_ids and ids.entities and graph["relations"], (listed.text, graph)
    rows = sql.execute(
        """
        SELECT id::text FROM memories WHERE tenant_id = %(t)s
        UNION ALL SELECT id::text FROM entities WHERE tenant_id = %(t)s
        UNION ALL SELECT id::text FROM relations WHERE tenant_id = %(t)s
        UNION ALL SELECT id::text FROM jobs WHERE tenant_id = %(t)s
        UNION ALL SELECT id::text FROM api_keys WHERE tenant_id = %(t)s
        UNION ALL SELECT prefix FROM api_keys WHERE tenant_id = %(t)s
        UNION ALL SELECT content FROM memories WHERE tenant_id = %(t)s AND length(content) >= 20
        UNION ALL SELECT fact FROM relations WHERE tenant_id = %(t)s AND length(fact) >= 20
        """,
        {"t": tenant_id},
    ).fetchall()
    markers = [r[0] for r in rows] + [str(tenant_id), name, user_id, admin]
    return Tenant(name, admin, ids, markers, tenant_id)


@pytest.fixture(scope="module")
def world(live_server: str, database, sql) -> tuple[Tenant, Tenant]:  # type: ignore[no-untyped-def]
    """Tenants A and B, each with an admin key, a read key, a user with memories, entities,
    relations and an ingest job."""
    a = _make_tenant(live_server, database, sql, "a", A_SPEAKER, A_MESSAGES)
    a.markers.extend(A_WORDS)
    b = _make_tenant(live_server, database, sql, "b", B_SPEAKER, B_MESSAGES)
    assert not any(w.lower() in " ".join(B_MESSAGES).lower() for w in A_WORDS)
    return a, b


def _snapshot(sql: psycopg.Connection, tenant_id: uuid.UUID) -> dict[str, str | None]:
    """A digest of every row of the tenant in every table that has a tenant_id, but for the use
    statistics that reads write on purpose (`access_count`, `last_accessed_at`: retention's input)."""
    tables = [
        r[0]
        for r in sql.execute(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name = 'tenant_id'"
        ).fetchall()
    ]
    assert {"memories", "entities", "relations", "jobs", "api_keys", "history"} <= set(tables)
    return {
        t: sql.execute(
            "SELECT md5(string_agg(j, '|' ORDER BY j)) FROM (SELECT (to_jsonb(x) - 'access_count'"
            f" - 'last_accessed_at')::text AS j FROM {t} x WHERE tenant_id = %s) s",
            (tenant_id,),
        ).fetchone()[0]
        for t in tables
    }


def _settle(sql: psycopg.Connection, tenant_id: uuid.UUID, timeout_s: float = 120) -> None:
    """Wait until no job of the tenant is queued or running."""
    deadline = time.monotonic() + timeout_s
    query = "SELECT count(*) FROM jobs WHERE tenant_id = %s AND status IN ('queued', 'running')"
    while sql.execute(query, (tenant_id,)).fetchone()[0]:
        assert time.monotonic() < deadline, "jobs still open"
        time.sleep(0.2)


def _leaks(response: httpx.Response, call: Call, markers: list[str]) -> list[str]:
    """Markers of the other tenant in the answer. What the request itself named is left out: an
    echo ('memory <id> not found') tells the caller nothing it did not know."""
    body, sent = response.text.lower(), call.text().lower()
    return [m for m in markers if m.lower() in body and m.lower() not in sent]


def _app_routes(service) -> Iterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(method, path) of every route the app serves, those of included routers too."""
    from memsvc.api import create_app

    class _NoQueue:
        pass

    app = create_app(service, _NoQueue())  # type: ignore[arg-type]
    # FastAPI >= 0.16x keeps included routers whole in app.routes; this walks into them.
    walk = getattr(routing, "iter_route_contexts", lambda routes: routes)
    for route in walk(app.routes):
        original = getattr(route, "original_route", route)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path or "")
        if isinstance(original, Mount):
            yield "GET", path
        elif route.methods:
            for method in sorted(set(route.methods) - {"HEAD"}):
                yield method, path
        else:
            yield type(original).__name__, path


def test_every_route_is_in_the_table(service) -> None:  # type: ignore[no-untyped-def]
    served = set(_app_routes(service))
    assert served - set(ROUTES) - PUBLIC == set(), "routes without an isolation/scope probe: add them"
    assert set(ROUTES) | PUBLIC <= served, "probes of routes the app does not serve"
    assert not set(ROUTES) & PUBLIC


def test_another_tenant_reaches_nothing_of_tenant_a(live_server: str, world, sql) -> None:  # type: ignore[no-untyped-def]
    a, b = world
    before = _snapshot(sql, a.tenant_id)
    for (method, path), probe in _ordered():
        for call in probe.calls(a.ids):
            response = _send(live_server, b.admin_key, method, call)
            where = f"{method} {call.path} {call.params or ''}"
            assert response.status_code in probe.foreign, (where, response.status_code, response.text)
            if response.status_code == 200:
                assert probe.empty(response.json()), (where, response.text)
            assert _leaks(response, call, a.markers) == [], (where, response.text)
            if (method, path) == ("POST", "/v1/memories"):
                made = response.json()["result"]
                assert made["duplicates"] == 0 and made["created"].get("turn") == 1, made
    for method, path in sorted(PUBLIC):
        response = _send(live_server, b.admin_key, method, Call(path))
        assert response.status_code in (200, 503), (method, path)
        assert _leaks(response, Call(path), a.markers) == [], (path, response.text)
    # Nothing of A changed, also by B's background jobs, and A still reads its own data.
    _settle(sql, b.tenant_id)
    assert _snapshot(sql, a.tenant_id) == before
    auth = {"Authorization": f"Bearer {a.admin_key}"}
    for memory_id in a.ids.memory_ids:
        assert httpx.get(f"{live_server}/v1/memories/{memory_id}", headers=auth).status_code == 200
    keys = httpx.get(f"{live_server}/v1/keys", headers=auth).json()["keys"]
    assert all(k["revoked_at"] is None for k in keys)


def test_each_route_needs_its_scope(live_server: str, world, sql) -> None:  # type: ignore[no-untyped-def]
    _, b = world
    admin = {"Authorization": f"Bearer {b.admin_key}"}
    keys: dict[tuple[KeyScope, ...], str] = {}
    for scopes in (("read",), ("write",), ("read", "write"), ("admin",)):
        made = httpx.post(
            f"{live_server}/v1/keys", json={"name": "-".join(scopes), "scopes": scopes}, headers=admin
        )
        assert made.status_code == 201, made.text
        assert made.json()["scopes"] == (["read", "write", "admin"] if "admin" in scopes else list(scopes))
        keys[scopes] = made.json()["key"]
    before = _snapshot(sql, b.tenant_id)

    made_for: list[Ids] = []
    for scopes, key in keys.items():
        # One set per key, so the erasure at the end takes away what the allowed writes made.
        fresh = _fresh_ids()
        made_for.append(fresh)
        for (method, path), probe in _ordered():
            allowed = "admin" in scopes or probe.scope in scopes
            if allowed and probe.scope == "read":
                ids, expected = b.ids, frozenset({200})
            elif allowed:
                ids, expected = fresh, probe.fresh
            else:
                ids, expected = b.ids, frozenset({403})
            for call in probe.calls(ids):
                response = _send(live_server, key, method, call)
                where = f"{scopes} {method} {path}"
                assert response.status_code in expected, (where, response.status_code, response.text)
                if response.status_code == 403:
                    problem = response.json()
                    assert response.headers["content-type"].startswith("application/problem+json")
                    assert problem["code"] == "forbidden" and probe.scope in problem["detail"], where
    # Every refused write left B's data as it was; the allowed ones touched only ids of no one
    # (and erasing those users, again once their background jobs are done, takes away what they made).
    _settle(sql, b.tenant_id)
    for fresh in made_for:
        assert httpx.delete(f"{live_server}/v1/users/{_user(fresh)}", headers=admin).status_code == 204
    after = _snapshot(sql, b.tenant_id)
    for table in set(before) - {"api_keys", "memory_changes"}:
        assert after[table] == before[table], table
    listed = httpx.get(f"{live_server}/v1/keys", headers=admin).json()["keys"]
    assert next(k for k in listed if k["id"] == b.ids.key_id)["revoked_at"] is None


@pytest.mark.parametrize("kind", ["revoked", "missing", "unknown", "malformed"])
def test_no_valid_key_gets_401_everywhere(live_server: str, world, kind: str) -> None:  # type: ignore[no-untyped-def]
    _, b = world
    admin = {"Authorization": f"Bearer {b.admin_key}"}
    key: str | None
    if kind == "revoked":
        made = httpx.post(
            f"{live_server}/v1/keys", json={"name": "doomed", "scopes": ["admin"]}, headers=admin
        )
        key = made.json()["key"]
        assert (
            httpx.get(f"{live_server}/v1/keys", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        )
        gone = httpx.delete(f"{live_server}/v1/keys/{made.json()['id']}", headers=admin)
        assert gone.status_code == 204
        listed = httpx.get(f"{live_server}/v1/keys", headers=admin).json()["keys"]
        assert next(k for k in listed if k["id"] == made.json()["id"])["revoked_at"] is not None
    else:
        key = {"missing": None, "unknown": "msk_" + "x" * 43, "malformed": "not-a-key"}[kind]
    for (method, path), probe in _ordered():
        for call in probe.calls(b.ids):
            response = _send(live_server, key, method, call)
            assert response.status_code == 401, (kind, method, path, response.text)
            assert response.headers.get("www-authenticate") == "Bearer"


def test_rotation(live_server: str, world) -> None:  # type: ignore[no-untyped-def]
    _, b = world
    admin = {"Authorization": f"Bearer {b.admin_key}"}

    def status(key: str) -> int:
        return httpx.get(
            f"{live_server}/v1/memories",
            params={"user_id": b.ids.user_id},
            headers={"Authorization": f"Bearer {key}"},
        ).status_code

    first = httpx.post(
        f"{live_server}/v1/keys", json={"name": "etl", "scopes": ["read"]}, headers=admin
    ).json()
    rotated = httpx.post(f"{live_server}/v1/keys/{first['id']}/rotate", headers=admin)
    assert rotated.status_code == 201, rotated.text
    second = rotated.json()
    assert (second["name"], second["scopes"]) == ("etl", ["read"]) and second["id"] != first["id"]
    assert status(second["key"]) == 200 and status(first["key"]) == 401
    again = httpx.post(f"{live_server}/v1/keys/{first['id']}/rotate", headers=admin)
    assert again.status_code == 409

    # With a grace period both keys work until the old one is revoked or its time is up.
    graced = httpx.post(
        f"{live_server}/v1/keys/{second['id']}/rotate", json={"grace_seconds": 600}, headers=admin
    ).json()
    assert status(second["key"]) == 200 and status(graced["key"]) == 200
    assert httpx.delete(f"{live_server}/v1/keys/{second['id']}", headers=admin).status_code == 204
    assert status(second["key"]) == 401 and status(graced["key"]) == 200
    bad = httpx.post(
        f"{live_server}/v1/keys/{graced['id']}/rotate", json={"grace_seconds": -1}, headers=admin
    )
    assert bad.status_code == 422

    # The list shows every key, never a secret.
    listed = httpx.get(f"{live_server}/v1/keys", headers=admin)
    assert {first["id"], second["id"], graced["id"]} <= {k["id"] for k in listed.json()["keys"]}
    assert not any(k["key"] in listed.text for k in (first, second, graced))
    assert all(
        set(k) == {"id", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"}
        for k in listed.json()["keys"]
    )
