"""The device-resident index follows Postgres: inserts, edits, supersessions and deletions."""

from __future__ import annotations

import contextlib
import time
import uuid

import numpy as np
from sqlalchemy import select

from memsvc.database import libpq_url
from memsvc.errors import NotFound
from memsvc.models import Memory, MemorySource
from memsvc.schemas import AddRequest, Message, UpdateRequest
from memsvc.vector_index import VectorIndex


def _add(service, ctx, user: str, texts: list[str]) -> list[set[uuid.UUID]]:  # type: ignore[no-untyped-def]
    """Ingest one message per text; for each, the ids of every memory it produced (turn and facts)."""
    messages = [Message(role="user", content=t, id=uuid.uuid4().hex) for t in texts]
    service.run_ingest_job(service.submit_ingest(ctx, AddRequest(user_id=user, messages=messages)))
    with service.db.session() as session:
        rows = session.execute(
            select(MemorySource.message_id, MemorySource.memory_id)
            .join(Memory, Memory.id == MemorySource.memory_id)
            .where(MemorySource.message_id.in_([m.id for m in messages]), Memory.kind != "session")
        ).all()
    return [{memory_id for message_id, memory_id in rows if message_id == m.id} for m in messages]


def _top(index: VectorIndex, embedder, ctx, user: str, text: str, k: int = 5) -> list[uuid.UUID]:  # type: ignore[no-untyped-def]
    partition = index.partition(ctx.tenant_id, user)
    return [h.memory_id for h in index.search(embedder.embed([text]), [partition], k)[0]]


def _eventually(check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "index did not catch up in time"
        time.sleep(0.05)


def test_index_follows_inserts_updates_and_deletes(service, database, embedder, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    texts = ["My cat is called Miso.", "I climbed Mount Rainier in July.", "I work as a nurse in Boston."]
    ids = _add(service, ctx, "idx-user", texts)
    index = VectorIndex(libpq_url(database.url), embedder.dim)
    index.load()
    index.start()
    try:
        for derived, text in zip(ids, texts, strict=True):
            assert _top(index, embedder, ctx, "idx-user", text)[0] in derived
        # Another user's rows are never returned for this user's query.
        [other] = _add(service, ctx, "idx-other", ["My cat is called Miso."])
        _eventually(lambda: index.partition(ctx.tenant_id, "idx-other") is not None)
        assert not other & set(_top(index, embedder, ctx, "idx-user", "My cat is called Miso.", k=10))

        # Insert: searchable within the documented lag.
        [new] = _add(service, ctx, "idx-user", ["I just adopted a parrot named Kiwi."])
        _eventually(lambda: bool(set(_top(index, embedder, ctx, "idx-user", "parrot named Kiwi")[:1]) & new))

        # Edit: re-embedded content moves. An active fact, so that nothing else is read again from
        # the edit (an edited turn's message gives new facts about ramen, which may rank first); the
        # cat's are out of date since the parrot came (one pet at a time).
        nurse = "User works as a nurse in Boston"
        edited = next(i for i in sorted(ids[2]) if service.get(ctx, i).content == nurse)
        service.update(ctx, edited, UpdateRequest(content="My favourite food is ramen."))
        _eventually(lambda: _top(index, embedder, ctx, "idx-user", "favourite food ramen")[:1] == [edited])

        # Delete: never returned again.
        for memory_id in ids[1]:
            with contextlib.suppress(NotFound):  # a message's turn takes the facts only it stated
                service.delete(ctx, memory_id)
        _eventually(lambda: not ids[1] & set(_top(index, embedder, ctx, "idx-user", texts[1], k=10)))

        # Compaction keeps what is live and drops the rest.
        before = index.size
        index.compact()
        assert index.size == before
        assert _top(index, embedder, ctx, "idx-user", "parrot named Kiwi")[0] in new
        assert not ids[1] & set(_top(index, embedder, ctx, "idx-user", texts[1], k=10))
    finally:
        index.stop()


def test_batched_search_keeps_each_query_in_its_partition(service, database, embedder, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    [a] = _add(service, ctx, "part-a", ["I love hiking in the Alps."])
    [b] = _add(service, ctx, "part-b", ["I love hiking in the Alps!"])
    index = VectorIndex(libpq_url(database.url), embedder.dim)
    index.load()
    queries = embedder.embed(["hiking in the Alps", "hiking in the Alps"])
    parts = [index.partition(ctx.tenant_id, "part-a"), index.partition(ctx.tenant_id, "part-b")]
    hits = index.search(queries, parts, 5)
    assert hits[0][0].memory_id in a and all(h.memory_id not in b for h in hits[0])
    assert hits[1][0].memory_id in b and all(h.memory_id not in a for h in hits[1])
    # A user with no rows gets nothing, not someone else's rows.
    assert index.search(queries[:1], [None], 5) == [[]]
    assert np.isfinite([h.score for h in hits[0]]).all()


def test_change_feed_is_trimmed(service, tenant, sql) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    _add(service, ctx, "trim-user", ["I keep bees on the roof."])
    assert sql.execute("SELECT count(*) FROM memory_changes").fetchone()[0] > 0
    assert service.trim_change_feed(3600.0) == 0  # nothing an hour old yet
    before = sql.execute("SELECT now()").fetchone()[0]
    assert service.trim_change_feed(0.0) > 0
    # Background work of other tests (the live server's worker) may log new changes meanwhile.
    left = sql.execute("SELECT count(*) FROM memory_changes WHERE at < %s", (before,)).fetchone()[0]
    assert left == 0


def test_writes_send_no_notify_and_the_index_polls(service, database, embedder, tenant) -> None:  # type: ignore[no-untyped-def]
    """Writing memories sends no NOTIFY (PostgreSQL would commit every writer one at a time): the
    index finds a write by polling the feed, within a small multiple of `max_lag_s`."""
    import psycopg

    ctx, _ = tenant
    _add(service, ctx, "poll-user", ["I keep bees on the roof."])
    index = VectorIndex(libpq_url(database.url), embedder.dim, max_lag_s=0.05)
    index.load()
    index.start()
    try:
        with psycopg.connect(libpq_url(database.url), autocommit=True) as listener:
            listener.execute("LISTEN memsvc_memory_changes")
            [new] = _add(service, ctx, "poll-user", ["My sister Ada lives in Oslo."])
            assert list(listener.notifies(timeout=0.5, stop_after=1)) == []
        _eventually(
            lambda: bool(set(_top(index, embedder, ctx, "poll-user", "sister Ada Oslo")[:1]) & new), 2.0
        )
    finally:
        index.stop()
