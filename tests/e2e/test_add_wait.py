"""Adds with `wait: true` through HTTP: waiting holds no server thread, so however many adds wait on
a slow queue, a search is answered meanwhile."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

WAITING_ADDS = 48  # more than the server's thread pool (40): each would have held a thread


def test_many_waiting_adds_leave_the_server_free_to_search(
    live_server: str, tenant, sql, database_url
) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    from memsvc.database import libpq_url

    ctx, key = tenant
    headers = {"Authorization": f"Bearer {key}"}
    # Hold the user's ingest lock: the worker's first job blocks on it and every add keeps waiting.
    with psycopg.connect(libpq_url(database_url)) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{ctx.tenant_id}/waiter",))

        def add(i: int) -> httpx.Response:
            body = {
                "user_id": "waiter",
                "wait": True,
                "messages": [{"role": "user", "content": f"Waiting note {i}.", "id": f"w{i}"}],
            }
            return httpx.post(f"{live_server}/v1/memories", json=body, headers=headers, timeout=120)

        with ThreadPoolExecutor(WAITING_ADDS) as pool:
            adds = [pool.submit(add, i) for i in range(WAITING_ADDS)]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # every add accepted: their jobs rows exist
                row = sql.execute(
                    "SELECT count(*) FROM jobs WHERE tenant_id = %s AND user_id = 'waiter'", (ctx.tenant_id,)
                ).fetchone()
                if row is not None and row[0] == WAITING_ADDS:
                    break
                time.sleep(0.05)
            assert not any(a.done() for a in adds)
            started = time.monotonic()
            search = httpx.post(
                f"{live_server}/v1/search",
                json={"user_id": "someone-else", "query": "anything"},
                headers=headers,
                timeout=10,
            )
            assert search.status_code == 200
            assert time.monotonic() - started < 5
            assert not any(a.done() for a in adds)
            holder.commit()  # let the jobs run
            statuses = [a.result().status_code for a in adds]
    assert statuses == [201] * WAITING_ADDS
