"""Two `memsvc serve` processes against one PostgreSQL, as a deployment of several replicas runs:
each keeps its own corpus cache and index, so a write through one must reach searches through the
other by the change feed. Everything talks to 127.0.0.1 only and is bounded in time and count."""

from __future__ import annotations

import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from memsvc.database import libpq_url
from tests.e2e.test_faults import _serve

pytestmark = pytest.mark.slow

VISIBLE_WITHIN_S = 1.0


def _add(http: httpx.Client, user_id: str, text: str) -> None:
    body = {
        "user_id": user_id,
        "wait": True,
        "messages": [{"role": "user", "name": "Ann", "id": uuid.uuid4().hex, "content": text}],
    }
    response = http.post("/v1/memories", json=body)
    assert response.status_code == 201, response.text


def _found(http: httpx.Client, user_id: str, token: str) -> bool:
    response = http.post("/v1/search", json={"user_id": user_id, "query": f"{token}?", "limit": 5})
    assert response.status_code == 200, response.text
    return any(token in hit["content"] for hit in response.json()["results"])


def _delay_until(want: bool, http: httpx.Client, user_id: str, token: str) -> tuple[float, int]:
    """Seconds from now until a search through `http` finds `token` (or no longer finds it), polled
    without pause, and the searches it took; fails once VISIBLE_WITHIN_S has passed."""
    t0 = time.monotonic()
    searches = 1
    while _found(http, user_id, token) != want:
        searches += 1
        state = "visible" if want else "gone"
        assert time.monotonic() - t0 < VISIBLE_WITHIN_S, f"{token}: not {state} in time"
    return time.monotonic() - t0, searches


def test_a_write_through_one_replica_is_searchable_through_the_other(
    tmp_path: Path, database_url: str, tenant: tuple[object, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, key = tenant
    env = {"MEMSVC_DATABASE_URL": libpq_url(database_url), "KEY": key}
    with ExitStack() as stack:
        replicas = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            serve = stack.enter_context(_serve(tmp_path / name, **env))
            http = stack.enter_context(
                httpx.Client(base_url=serve.base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            )
            replicas.append(http)
        assert replicas[0].base_url != replicas[1].base_url
        user = f"replica-{uuid.uuid4().hex[:8]}"
        # both replicas have searched the user before the writes (their caches hold the old corpus)
        _add(replicas[0], user, "Ann planted tomatoes in her garden.")
        for http in replicas:
            _delay_until(True, http, user, "tomatoes")
        delays: list[tuple[float, int]] = []
        for i in range(6):
            writer, reader = replicas[i % 2], replicas[1 - i % 2]
            token = f"zorblax{uuid.uuid4().hex[:8]}"
            assert not _found(reader, user, token)
            _add(writer, user, f"Ann keeps a {token} in her shed.")
            delays.append(_delay_until(True, reader, user, token))
        # an erasure through one replica is gone from the other as quickly
        assert replicas[0].delete(f"/v1/users/{user}").status_code in (200, 204)
        erase_delay, erase_searches = _delay_until(False, replicas[1], user, "tomatoes")
    with capsys.disabled():
        print(
            f"\nreplica visibility (write via one, search via the other), {len(delays)} writes: "
            f"max {1e3 * max(d for d, _ in delays):.0f} ms, searches until visible "
            f"{[n for _, n in delays]}; erasure {1e3 * erase_delay:.0f} ms ({erase_searches} searches)"
        )
