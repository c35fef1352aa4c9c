"""UserCorpus without a database: updated in place, it equals a fresh load of the same rows, and
`search.rank_corpus` (what production runs) ranks it through `ranking.rank`."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pytest

from memsvc import corpus as corpus_module
from memsvc.corpus import CorpusRow, UserCorpus
from memsvc.schemas import SearchRequest
from memsvc.search import SearchConfig, rank_corpus

WORDS = "paint sunrise lake pottery violin boston denver pilot sister dog chess bread park museum".split()
DIM = 8
QUERIES = ["paint a sunrise", "sister pilot boston", "dog park", "chess"]


def _row(rng: random.Random, memory_id: uuid.UUID | None = None, **over: object) -> CorpusRow:
    kind = rng.choice(["turn", "turn", "turn", "fact", "preference", "session"])
    semantic = kind in ("fact", "preference")
    session = rng.choice(["s1", "s2", "s3", None]) if not semantic else rng.choice(["s1", None])
    values: dict[str, object] = {
        "id": memory_id or uuid.UUID(int=rng.getrandbits(128)),
        "type": "semantic" if semantic else "episodic",
        "kind": kind,
        "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 6))),
        "speaker": rng.choice(["Ann", "Bob"]) if kind == "turn" else None,
        "role": "user",
        "agent_id": None,
        "session_id": session,
        "position": rng.randint(0, 6) if kind == "turn" else None,
        "event_at": datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=rng.randint(0, 5)),
        "valid_from": None,
        "valid_to": None,
        "status": rng.choice(["active"] * 6 + ["superseded", "archived"]),
        "pinned": False,
        "created_at": datetime(2024, 1, 1, tzinfo=UTC),
        "metadata": _instruction_metadata(rng) if kind == "preference" else {},
        "source_message_ids": (f"m{rng.randint(0, 99)}",),
        "entity_ids": (),
    }
    values.update(over)
    return CorpusRow(**values)  # type: ignore[arg-type]


def _instruction_metadata(rng: random.Random) -> dict[str, str]:
    """A standing instruction's metadata, or (a plain preference) none."""
    return {"applies_to": rng.choice(QUERIES)} if rng.random() < 0.7 else {}


def _vector(rng: random.Random) -> npt.NDArray[np.float32]:
    v = np.array([rng.gauss(0, 1) for _ in range(DIM)], dtype=np.float32)
    return v / np.linalg.norm(v)


def _fresh(rows: dict[uuid.UUID, tuple[CorpusRow, npt.NDArray[np.float32]]]) -> UserCorpus:
    ordered = sorted(rows.values(), key=lambda rv: rv[0].sort_key())
    vectors = np.stack([v for _, v in ordered]) if ordered else np.zeros((0, 0), dtype=np.float32)
    corpus = UserCorpus()
    corpus.load([r for r, _ in ordered], vectors)
    return corpus


def _view(corpus: UserCorpus) -> tuple[object, ...]:
    order = corpus.order.tolist()
    previous = [corpus.previous_turn(s) for s in order]
    return (
        [corpus.rows[s] for s in order],
        [corpus.vectors[s].tobytes() for s in order],
        [corpus.rows[p].id if p is not None else None for p in previous],
        [corpus.bm25.score(q)[order].tolist() for q in QUERIES],
        [corpus.rows[s].id for s in corpus.unarchived().tolist()],
        corpus.speakers,
        [corpus.rows[s].id for s in corpus.instruction_slots()],
        len(corpus),
        len(corpus.bm25),
    )


@pytest.mark.parametrize("seed", range(6))
def test_apply_equals_a_fresh_load(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus_module, "COMPACT_MIN_DEAD", 5)
    rng = random.Random(seed)
    state: dict[uuid.UUID, tuple[CorpusRow, npt.NDArray[np.float32]]] = {}
    corpus = UserCorpus()
    corpus.load([], np.zeros((0, 0), dtype=np.float32))
    for _ in range(120):
        upserts, removed = [], set()
        for _ in range(rng.randint(1, 4)):
            op = rng.choice(["add", "add", "edit", "move", "delete"]) if state else "add"
            if op == "add":
                row = _row(rng)
                upserts.append((row, _vector(rng)))
            elif op == "delete":
                removed.add(rng.choice(list(state)))
            else:
                old, vector = state[rng.choice(list(state))]
                new = (
                    _row(rng, old.id, kind=old.kind, type=old.type)
                    if op == "move"
                    else old._replace(
                        content=" ".join(rng.choices(WORDS, k=3)),
                        status=rng.choice(["active", "archived"]),
                        metadata=_instruction_metadata(rng) if old.kind == "preference" else old.metadata,
                    )
                )
                upserts.append((new, vector if op == "edit" else _vector(rng)))
        latest = {row.id: (row, vector) for row, vector in upserts}
        removed -= set(latest)
        for memory_id in removed:
            state.pop(memory_id, None)
        state.update(latest)
        corpus.apply(list(latest.values()), removed)
        assert _view(corpus) == _view(_fresh(state))
    assert corpus.order.size == len(state)


def test_rank_corpus_runs_the_ranking_recipe_with_graph_and_supersession() -> None:
    rng = random.Random(7)
    rex = uuid.uuid4()
    rows = [
        _row(
            rng,
            kind="turn",
            type="episodic",
            session_id="s1",
            position=0,
            status="active",
            content="What did you adopt?",
            speaker="Bob",
        ),
        _row(
            rng,
            kind="turn",
            type="episodic",
            session_id="s1",
            position=1,
            status="active",
            content="A puppy called Rex",
            speaker="Ann",
            entity_ids=(rex,),
        ),
        _row(
            rng,
            kind="fact",
            type="semantic",
            session_id="s1",
            status="superseded",
            content="Ann has a cat",
            speaker=None,
        ),
        _row(
            rng,
            kind="fact",
            type="semantic",
            session_id="s1",
            status="active",
            content="Ann has a puppy",
            speaker=None,
        ),
    ]
    vectors = np.stack([_vector(rng) for _ in rows])
    near = vectors[2] + 0.3 * vectors[0]  # the current fact: close to the superseded one, a bit less
    vectors[3] = near / np.linalg.norm(near)
    corpus = UserCorpus()
    ordered = sorted(range(len(rows)), key=lambda i: rows[i].sort_key())
    corpus.load([rows[i] for i in ordered], vectors[ordered])
    corpus.set_graph([(rex, "Rex", "animal", "rex", [])], [])
    config = SearchConfig()
    query = vectors[2].copy()  # the superseded fact is the densest match...
    out = rank_corpus(corpus, SearchRequest(query="Does Ann have a pet?", user_id="u"), query, config)
    ids = [r.id for r in out]
    assert ids.index(rows[3].id) < ids.index(rows[2].id)  # ...but it is superseded
    past = rank_corpus(
        corpus, SearchRequest(query="What pet did Ann have before?", user_id="u"), query, config
    )
    assert past[0].id == rows[2].id  # a question about the past does not push it down
    rex_first = rank_corpus(corpus, SearchRequest(query="Tell me about Rex", user_id="u"), vectors[0], config)
    assert rex_first[0].metadata.get("memory_ids", [str(rex_first[0].id)])[-1] == str(rows[1].id)
