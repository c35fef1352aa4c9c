"""Cached corpora kept current from the change feed: after any sequence of writes, edits, deletes,
supersessions and erasures, the incrementally updated corpus is the one a fresh load builds."""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from memsvc import consolidation_store
from memsvc import corpus as corpus_module
from memsvc.consolidation import Supersede
from memsvc.corpus import CorpusCache, UserCorpus
from memsvc.schemas import AddRequest, Message, SearchRequest, UpdateRequest
from memsvc.search import rank_corpus

NAMES = ["Ann", "Bob", "Cleo"]
PLACES = ["Boston", "Denver", "Lisbon", "Kyoto"]
THINGS = ["pottery", "a sunrise", "the violin", "sourdough bread", "a lake", "chess"]
QUERIES = [
    "What did Ann paint?",
    "Where does Bob live?",
    "When did Cleo start the violin?",
    "pottery class with Jo",
]


def _sentence(rng: random.Random) -> str:
    return rng.choice(
        [
            f"I live in {rng.choice(PLACES)} now.",
            f"My sister {rng.choice(['Jo', 'Mia'])} is a pilot in {rng.choice(PLACES)}.",
            f"Last week I painted {rng.choice(THINGS)} with {rng.choice(NAMES)}.",
            f"I love {rng.choice(THINGS)} and {rng.choice(THINGS)}.",
            f"We met {rng.choice(NAMES)} at the {rng.choice(['museum', 'park', 'studio'])} yesterday.",
            f"What did you think of {rng.choice(THINGS)}?",
            f"Yes! {rng.randint(0, 10**6)} reasons.",
        ]
    )


def _state(corpus: UserCorpus) -> dict[str, Any]:
    """Everything ranking reads from a corpus, keyed by memory id (slots differ between the two)."""
    order = corpus.order.tolist()
    rows = [corpus.rows[s] for s in order]
    live = np.zeros(len(corpus.rows), dtype=np.bool_)
    live[order] = True
    scores = {q: corpus.bm25.score(q) for q in QUERIES}
    for q, s in scores.items():
        assert not s[~live].any(), f"a dead slot scores for {q!r}"
    previous = {}
    for s in order:
        p = corpus.previous_turn(s)
        previous[corpus.rows[s].id] = corpus.rows[p].id if p is not None else None
    return {
        "order": [r.id for r in rows],
        "rows": {r.id: r for r in rows},
        "vectors": {r.id: corpus.vectors[s].tobytes() for r, s in zip(rows, order, strict=True)},
        "previous": previous,
        "bm25": {q: [float(s[i]) for i in order] for q, s in scores.items()},
        "bm25_live": len(corpus.bm25),
        "unarchived": [corpus.rows[s].id for s in corpus.unarchived().tolist()],
        "speakers": corpus.speakers,
        "instructions": sorted(str(corpus.rows[s].id) for s in corpus.instruction_slots()),
        "entities": corpus.entities,
        "labels": corpus.entity_labels,
        "edges": corpus.edges,
        "len": len(corpus),
    }


def _fresh(service, ctx, user: str) -> UserCorpus:  # type: ignore[no-untyped-def]
    with service.db.session() as session, CorpusCache().reading(session, ctx.tenant_id, user) as fresh:
        return fresh


def _check(service, ctx, user: str) -> None:  # type: ignore[no-untyped-def]
    engine = service.search_engine
    with service.db.session() as session, engine.corpora.reading(session, ctx.tenant_id, user) as corpus:
        fresh = _fresh(service, ctx, user)
        assert _state(corpus) == _state(fresh)
        if len(fresh):
            for q in QUERIES:
                vector = service.embedder.embed([q])[0]
                request = SearchRequest(query=q, user_id=user, limit=10)
                expected = rank_corpus(fresh, request, vector, engine.config)
                assert rank_corpus(corpus, request, vector, engine.config) == expected


def _ingest(service, ctx, request: AddRequest) -> None:  # type: ignore[no-untyped-def]
    outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
    assert outcome.status == "succeeded", outcome.error


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_corpus_equals_a_fresh_load(service, tenant, monkeypatch, seed: int) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(corpus_module, "COMPACT_MIN_DEAD", 8)  # compaction happens within the test
    ctx, _ = tenant
    rng = random.Random(seed)
    user = f"prop-{seed}-{uuid.uuid4().hex[:6]}"
    clock = datetime(2024, 1, 1, tzinfo=UTC)
    sent: list[AddRequest] = []
    ops: list[str] = []
    for step in range(45):
        listing = service.list(ctx, user, memory_type=None, limit=500, cursor=None).items
        op = rng.choices(
            ["add", "add", "add", "resend", "edit", "meta", "delete", "supersede", "erase"],
            weights=[3, 3, 3, 1, 2, 1, 2, 1, 0.3 if step > 20 else 0],
        )[0]
        if op in ("edit", "meta", "delete", "supersede") and len(listing) < 3:
            op = "add"
        ops.append(op)
        if op == "add":
            clock += timedelta(minutes=rng.randint(1, 600))
            session_id = f"s{rng.randint(0, 3)}"
            messages = [
                Message(
                    role="user",
                    name=rng.choice(NAMES),
                    content=_sentence(rng),
                    id=f"m{step}-{i}",
                    created_at=clock + timedelta(seconds=i),
                )
                for i in range(rng.randint(1, 3))
            ]
            request = AddRequest(user_id=user, session_id=session_id, messages=messages)
            sent.append(request)
            _ingest(service, ctx, request)
        elif op == "resend" and sent:
            _ingest(service, ctx, rng.choice(sent))
        elif op == "edit":
            memory = rng.choice(listing)
            service.update(ctx, memory.id, UpdateRequest(content=_sentence(rng)))
        elif op == "meta":
            memory = rng.choice(listing)
            service.update(ctx, memory.id, UpdateRequest(metadata={"tag": step}, pinned=True))
        elif op == "delete":
            service.delete(ctx, rng.choice(listing).id)
        elif op == "supersede":
            facts = [m for m in listing if m.type == "semantic" and m.status == "active"]
            if len(facts) >= 2:
                old, new = rng.sample(facts, 2)
                # As consolidation closes a value (and the turn that said only it) with its successor.
                with service.db.session() as session:
                    until = new.valid_from or new.event_at or clock
                    consolidation_store.apply_supersessions(
                        session, ctx.tenant_id, user, [Supersede(old.id, new.id, until)], "test"
                    )
        elif op == "erase":
            service.delete_user(ctx, user)
        _check(service, ctx, user)
    assert service.search_engine.corpora.syncs > 0
    assert {"add", "edit", "delete"} <= set(ops)


def test_concurrent_searches_after_a_write_share_one_sync(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = f"conc-{uuid.uuid4().hex[:6]}"
    when = datetime(2024, 5, 1, tzinfo=UTC)
    for i in range(3):
        _ingest(
            service,
            ctx,
            AddRequest(
                user_id=user,
                session_id="s",
                messages=[Message(role="user", name="Ann", content=f"I live in {PLACES[i]}.", id=f"c{i}")],
            ),
        )
    cache = service.search_engine.corpora
    service.search(ctx, SearchRequest(query="warm", user_id=user))
    _ingest(
        service,
        ctx,
        AddRequest(
            user_id=user,
            session_id="s",
            messages=[
                Message(role="user", name="Ann", content="I moved to Kyoto.", id="c9", created_at=when)
            ],
        ),
    )
    syncs, loads = cache.syncs, cache.loads
    results: list[list[str]] = []
    barrier = threading.Barrier(6)

    def search() -> None:
        barrier.wait()
        found = service.search(ctx, SearchRequest(query="Where does Ann live now, Kyoto?", user_id=user))
        results.append([r.content for r in found])

    threads = [threading.Thread(target=search) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(any("Kyoto" in c for c in r) for r in results)
    # Other tests' users may sync meanwhile, but this user's six searches made at most one
    # incremental sync each time the feed moved, and no full reload.
    assert cache.loads == loads
    assert cache.syncs - syncs <= 2


def test_cache_is_bounded_in_bytes_and_evicts_least_recently_used(service, tenant, database) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    users = [f"lru-{i}-{uuid.uuid4().hex[:4]}" for i in range(3)]
    for _i, user in enumerate(users):
        _ingest(
            service,
            ctx,
            AddRequest(
                user_id=user,
                messages=[
                    Message(role="user", name="Bo", content=f"Fact {j} about {user}.") for j in range(5)
                ],
            ),
        )
    cache = CorpusCache(max_bytes=1)  # any corpus is over budget: only the last one used stays
    for user in users:
        with database.session() as session, cache.reading(session, ctx.tenant_id, user) as corpus:
            assert len(corpus) >= 5
    assert len(cache) == 1 and cache.nbytes() > 1
    sized = CorpusCache()
    with database.session() as session, sized.reading(session, ctx.tenant_id, users[0]):
        pass
    one = sized.nbytes()
    cache = CorpusCache(max_bytes=int(one * 2.5))
    for user in [users[0], users[1], users[0], users[2]]:  # users[1] is least recently used at the end
        with database.session() as session, cache.reading(session, ctx.tenant_id, user):
            pass
    keys = [key[1] for key in cache._entries]
    assert keys == [users[0], users[2]]
    assert cache.loads == 3


def test_two_services_with_their_own_caches_see_each_others_writes(  # type: ignore[no-untyped-def]
    settings, database, embedder, service, tenant
) -> None:
    from memsvc.service import MemoryService

    other = MemoryService(settings, database, embedder=embedder)
    ctx, _ = tenant
    user = f"replica-{uuid.uuid4().hex[:6]}"
    first = AddRequest(
        user_id=user,
        messages=[Message(role="user", name="Ann", content="I adopted a dog called Rex.", id="r1")],
    )
    _ingest(service, ctx, first)
    assert other.search(ctx, SearchRequest(query="dog", user_id=user))  # both caches warm
    assert service.search(ctx, SearchRequest(query="dog", user_id=user))
    _ingest(
        other,
        ctx,
        AddRequest(
            user_id=user,
            messages=[Message(role="user", name="Ann", content="My parrot Kiwi sings opera.", id="r2")],
        ),
    )
    written = time.monotonic()
    seen = service.search(ctx, SearchRequest(query="parrot that sings", user_id=user, limit=3))
    assert "Kiwi" in seen[0].content
    assert time.monotonic() - written < 1.0
    kiwi = {m.id for m in seen if "Kiwi" in m.content}
    for memory_id in kiwi:
        service.delete(ctx, memory_id)
    deleted = time.monotonic()
    again = other.search(ctx, SearchRequest(query="parrot that sings", user_id=user, limit=20))
    assert not kiwi & {m.id for m in again}
    assert time.monotonic() - deleted < 1.0
