"""The device-resident index follows Postgres: inserts, edits, supersessions and deletions."""

from __future__ import annotations

import time
import uuid

import numpy as np

from memsvc.database import libpq_url
from memsvc.schemas import AddRequest, Message, UpdateRequest
from memsvc.vector_index import VectorIndex


def _add(service, ctx, user: str, texts: list[str]) -> list[uuid.UUID]:  # type: ignore[no-untyped-def]
    request = AddRequest(
        user_id=user, messages=[Message(role="user", content=t, id=uuid.uuid4().hex) for t in texts]
    )
    outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
    return outcome.result.memory_ids[: len(texts)]


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
        for memory_id, text in zip(ids, texts, strict=True):
            assert _top(index, embedder, ctx, "idx-user", text)[0] == memory_id
        # Another user's rows are never returned for this user's query.
        other = _add(service, ctx, "idx-other", ["My cat is called Miso."])
        _eventually(lambda: index.partition(ctx.tenant_id, "idx-other") is not None)
        assert other[0] not in _top(index, embedder, ctx, "idx-user", "My cat is called Miso.", k=10)

        # Insert: searchable within the documented lag.
        [new] = _add(service, ctx, "idx-user", ["I just adopted a parrot named Kiwi."])
        _eventually(lambda: _top(index, embedder, ctx, "idx-user", "parrot named Kiwi")[:1] == [new])

        # Edit: re-embedded content moves.
        service.update(ctx, ids[0], UpdateRequest(content="My favourite food is ramen."))
        _eventually(lambda: _top(index, embedder, ctx, "idx-user", "favourite food ramen")[:1] == [ids[0]])

        # Delete: never returned again.
        service.delete(ctx, ids[1])
        _eventually(lambda: ids[1] not in _top(index, embedder, ctx, "idx-user", texts[1], k=10))

        # Compaction keeps what is live and drops the rest.
        before = index.size
        index.compact()
        assert index.size == before
        assert _top(index, embedder, ctx, "idx-user", "parrot named Kiwi")[0] == new
        assert ids[1] not in _top(index, embedder, ctx, "idx-user", texts[1], k=10)
    finally:
        index.stop()


def test_batched_search_keeps_each_query_in_its_partition(service, database, embedder, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    a = _add(service, ctx, "part-a", ["I love hiking in the Alps."])
    b = _add(service, ctx, "part-b", ["I love hiking in the Alps!"])
    index = VectorIndex(libpq_url(database.url), embedder.dim)
    index.load()
    queries = embedder.embed(["hiking in the Alps", "hiking in the Alps"])
    parts = [index.partition(ctx.tenant_id, "part-a"), index.partition(ctx.tenant_id, "part-b")]
    hits = index.search(queries, parts, 5)
    assert hits[0][0].memory_id == a[0] and all(h.memory_id not in b for h in hits[0])
    assert hits[1][0].memory_id == b[0] and all(h.memory_id not in a for h in hits[1])
    # A user with no rows gets nothing, not someone else's rows.
    assert index.search(queries[:1], [None], 5) == [[]]
    assert np.isfinite([h.score for h in hits[0]]).all()
