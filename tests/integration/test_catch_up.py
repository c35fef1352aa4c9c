"""After an acknowledged write, the process's cached corpus of that user takes it at once, so the
agent's next search has nothing left to apply."""

from __future__ import annotations

import uuid

from memsvc.schemas import AddRequest, Message, SearchRequest


def _add(service, ctx, user: str, text: str, message_id: str) -> None:  # type: ignore[no-untyped-def]
    request = AddRequest(
        user_id=user, session_id="s", messages=[Message(role="user", name="Ann", content=text, id=message_id)]
    )
    service.run_ingest_job(service.submit_ingest(ctx, request))


def test_catch_up_applies_a_write_before_the_next_search(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"catch-{uuid.uuid4().hex[:6]}"
    cache = service.search_engine.corpora
    _add(service, ctx, user, "I live in Lisbon.", "m1")
    service.search(ctx, SearchRequest(query="warm the cache", user_id=user))
    _add(service, ctx, user, "My parrot is called Kiwi.", "m2")

    syncs, loads = cache.syncs, cache.loads
    service.catch_up(ctx, user)
    assert cache.syncs == syncs + 1  # the write applied now (`syncs` counts syncs that applied changes)
    found = service.search(ctx, SearchRequest(query="What is the parrot called?", user_id=user))
    assert any("Kiwi" in r.content for r in found)
    assert (cache.syncs, cache.loads) == (syncs + 1, loads)  # the search had nothing left to apply


def test_catch_up_loads_no_user_that_is_not_cached(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"cold-{uuid.uuid4().hex[:6]}"
    _add(service, ctx, user, "I work as a nurse.", "m1")
    cache = service.search_engine.corpora
    loads, cached = cache.loads, len(cache)
    service.catch_up(ctx, user)
    assert (cache.loads, len(cache)) == (loads, cached)
