"""Consolidation benchmark: what a run costs and what it changes.

1. Scale (`--memories`): one long-lived synthetic user — three years of turns (a third of them small
   talk), facts restated many times (the same sentence from many turns), attributes that change
   (city, job, car, each with its plain statement), dated events. Rows are written straight into
   the tables (ingest would take hours on a small machine); each distinct text is embedded once.
   Reports run time, active memories before/after and search latency (warm, exact backend)
   before/after.
2. LoCoMo (`--locomo`): the conversations of shared/data/locomo ingested as in bench/locomo.py,
   recall@10 and words in the top 10 before and after a consolidation run, and the questions
   whose top 10 it changed. `--beam 1 2 ...`: the same on BEAM chats (user–assistant).
3. Fact precision (`--facts N`): a labelled sample of the facts extracted from LoCoMo's report half,
   before and after a run (labels: bench/labels/locomo_facts.json).
4. Entity merging (`--entity-pairs [FILE]`): precision and recall of merging two entities of one
   type by the cosine of their names' vectors, at several thresholds, on hand-labelled pairs of
   names extracted from LoCoMo's tune half (bench/labels/entity_pairs.json); how
   `MEMSVC_CONSOLIDATION_ENTITY_MERGE_COSINE` was chosen.

    python bench/consolidation.py [--memories 50000] [--locomo [conv-26 ...]] [--beam 8 ...]
                                  [--facts 240] [--entity-pairs] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench._common import LOCOMO_DIR, fresh_service, machine, percentile, print_table, write_json

SMALL_TALK = [
    "Thanks so much!",
    "Haha, that's awesome!",
    "Wow, congrats!",
    "Sounds good, talk soon!",
    "Good morning! How are you?",
    "That's so cool.",
    "Take care!",
    "Lol, same here.",
    "Thanks, Jo! Appreciate the kind words.",
    "Nice!",
    "You too!",
    "Great, thanks!",
]
PLACES = [
    "the lake",
    "the museum",
    "a jazz bar",
    "the farmers market",
    "the climbing gym",
    "the library",
    "a pottery studio",
    "the beach",
    "a bakery downtown",
    "the zoo",
    "a book club",
    "the cinema",
]
THINGS = [
    "sourdough bread",
    "octopus documentaries",
    "trail running",
    "board games",
    "Korean food",
    "watercolor painting",
    "jazz records",
    "vintage cameras",
    "indoor plants",
    "sci-fi novels",
    "yoga",
    "chess",
    "bird watching",
    "salsa dancing",
    "home brewing",
    "knitting",
]
FRIENDS = ["Jo", "Max", "Lou", "Kim", "Ana", "Raj"]
CITIES = ["Denver", "Boston", "Seattle", "Austin", "Chicago", "Portland", "Miami", "Atlanta"]
JOBS = ["nurse", "teacher", "pilot", "accountant", "architect", "chef", "pharmacist", "librarian"]
CARS = ["Honda Civic", "Toyota Corolla", "Tesla Model 3", "Ford Focus", "Subaru Outback", "Kia Soul"]
QUERIES = [
    "Where does Sam live now?",
    "What does Sam do for work?",
    "What car does Sam drive?",
    "What does Sam like?",
    "When did Sam go to the museum?",
    "What hobbies does Sam have?",
    "Who did Sam go to the beach with?",
    "Does Sam like chess?",
    "What did Sam do with Raj?",
    "What food does Sam enjoy?",
]


def _hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).lower().encode()).hexdigest()


def synthetic_rows(n: int, rng: random.Random, start: datetime) -> list[dict[str, Any]]:
    """About `n` memories of one user: turns, restated facts, changing attributes, dated events."""
    rows: list[dict[str, Any]] = []
    span = timedelta(days=3 * 365)
    n_turns = int(n * 0.55)
    facts_pool = [f"Sam likes {t}" for t in THINGS] + [
        f"Sam enjoys {t} with {f}" for t in THINGS for f in FRIENDS
    ]
    attribute_changes = {"residence": CITIES, "job": JOBS, "car": CARS}
    for i in range(n_turns):
        at = start + span * (i / n_turns)
        if rng.random() < 0.35:
            text, speaker = rng.choice(SMALL_TALK), rng.choice([*FRIENDS, "Sam"])
        else:
            speaker = "Sam"
            text = rng.choice(
                [
                    f"I went to {rng.choice(PLACES)} with {rng.choice(FRIENDS)}.",
                    f"I've been getting into {rng.choice(THINGS)} lately.",
                    f"{rng.choice(FRIENDS)} and I talked about {rng.choice(THINGS)}.",
                ]
            )
        rows.append(
            {
                "kind": "turn",
                "type": "episodic",
                "content": text,
                "speaker": speaker,
                "at": at,
                "message_id": f"m{i}",
                "subject": None,
                "attribute": None,
                "importance": 0.5,
            }
        )
    n_facts = n - n_turns
    changes = 36  # an attribute changes about monthly, in turn
    for i in range(n_facts):
        at = start + span * (i / n_facts)
        r = rng.random()
        if i % max(1, n_facts // changes) == 0:
            attribute = list(attribute_changes)[(i // max(1, n_facts // changes)) % 3]
            value = rng.choice(attribute_changes[attribute])
            content = {
                "residence": f"Sam lives in {value}",
                "job": f"Sam works as a {value}",
                "car": f"Sam drives a {value}",
            }[attribute]
            rows.append(
                {
                    "kind": "fact",
                    "type": "semantic",
                    "content": content,
                    "speaker": None,
                    "at": at,
                    "subject": "Sam",
                    "attribute": attribute,
                    "importance": 0.5,
                }
            )
        elif r < 0.7:
            # Restated: a Zipf-ish choice from a small pool, so most facts are duplicates.
            content = facts_pool[min(int(rng.paretovariate(1.2)) - 1, len(facts_pool) - 1)]
            rows.append(
                {
                    "kind": "preference",
                    "type": "semantic",
                    "content": content,
                    "speaker": None,
                    "at": at,
                    "subject": "Sam",
                    "attribute": None,
                    "importance": 0.5,
                }
            )
        else:
            content = f"Sam went to {rng.choice(PLACES)} on {at:%-d %B %Y}"
            rows.append(
                {
                    "kind": "event",
                    "type": "semantic",
                    "content": content,
                    "speaker": None,
                    "at": at,
                    "subject": "Sam",
                    "attribute": None,
                    "importance": 0.6,
                }
            )
    return rows


def load_synthetic(service: Any, tenant_id: uuid.UUID, user: str, rows: list[dict[str, Any]]) -> None:
    from sqlalchemy.dialects.postgresql import insert

    from memsvc.models import Memory, MemorySource

    texts = sorted({r["content"] for r in rows})
    vectors = dict(zip(texts, service.embedder.embed(texts), strict=True))
    turn_ids = [uuid.uuid4() for r in rows if r["kind"] == "turn"]
    turn_messages = [r["message_id"] for r in rows if r["kind"] == "turn"]
    memories, sources = [], []
    t = 0
    for r in rows:
        memory_id = turn_ids[t] if r["kind"] == "turn" else uuid.uuid4()
        if r["kind"] == "turn":
            t += 1
        memories.append(
            {
                "id": memory_id,
                "tenant_id": tenant_id,
                "user_id": user,
                "type": r["type"],
                "kind": r["kind"],
                "content": r["content"],
                "content_hash": _hash(r["content"]),
                "speaker": r["speaker"],
                "message_id": r.get("message_id"),
                "session_id": f"s{r['at']:%Y%m%d}",
                "event_at": r["at"],
                "valid_from": r["at"],
                "subject": r["subject"],
                "attribute": r["attribute"],
                "importance": r["importance"],
                "metadata_": {},
                "embedding": vectors[r["content"]],
            }
        )
        if r["kind"] == "turn":
            sources.append(
                {
                    "memory_id": memory_id,
                    "message_id": r["message_id"],
                    "turn_id": memory_id,
                    "tenant_id": tenant_id,
                    "user_id": user,
                }
            )
        else:
            k = min(t, len(turn_ids) - 1)
            sources.append(
                {
                    "memory_id": memory_id,
                    "message_id": turn_messages[k],
                    "turn_id": turn_ids[k],
                    "tenant_id": tenant_id,
                    "user_id": user,
                }
            )
    for start in range(0, len(memories), 2000):
        with service.db.session() as session:
            session.execute(insert(Memory), memories[start : start + 2000])
    for start in range(0, len(sources), 5000):
        with service.db.session() as session:
            session.execute(insert(MemorySource), sources[start : start + 5000])


def search_latency(service: Any, ctx: Any, user: str, rounds: int = 3) -> dict[str, float]:
    from memsvc.schemas import SearchRequest

    service.search(ctx, SearchRequest(query="warm up", user_id=user))  # load the corpus
    times = []
    for _ in range(rounds):
        for q in QUERIES:
            t0 = time.perf_counter()
            service.search(ctx, SearchRequest(query=q, user_id=user, limit=10))
            times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95)}


def active_count(service: Any, tenant_id: uuid.UUID, user: str) -> int:
    from sqlalchemy import func, select

    from memsvc.models import Memory

    with service.db.session() as session:
        return int(
            session.execute(
                select(func.count()).where(
                    Memory.tenant_id == tenant_id, Memory.user_id == user, Memory.status != "archived"
                )
            ).scalar_one()
        )


_COPY_USER = """
CREATE TEMP TABLE twin_ids ON COMMIT DROP AS
    SELECT id AS old, gen_random_uuid() AS new FROM memories WHERE tenant_id = :t AND user_id = :u;
INSERT INTO memories (id, tenant_id, user_id, agent_id, session_id, type, kind, content, content_hash,
    role, speaker, message_id, position, event_at, event_end_at, subject, attribute, valid_from, valid_to,
    importance, confidence, status, pinned, superseded_by, archived_at, expires_at, access_count,
    last_accessed_at, metadata, embedding)
SELECT t.new, m.tenant_id, :twin, m.agent_id, m.session_id, m.type, m.kind, m.content, m.content_hash,
    m.role, m.speaker, m.message_id, m.position, m.event_at, m.event_end_at, m.subject, m.attribute,
    m.valid_from, m.valid_to, m.importance, m.confidence, m.status, m.pinned, m.superseded_by,
    m.archived_at, m.expires_at, m.access_count, m.last_accessed_at, m.metadata, m.embedding
FROM memories m JOIN twin_ids t ON t.old = m.id;
INSERT INTO memory_sources (memory_id, message_id, turn_id, tenant_id, user_id)
SELECT a.new, s.message_id, b.new, s.tenant_id, :twin
FROM memory_sources s JOIN twin_ids a ON a.old = s.memory_id LEFT JOIN twin_ids b ON b.old = s.turn_id;
"""


def copy_user(service: Any, tenant_id: uuid.UUID, user: str, twin: str) -> None:
    """A second user with the same rows (new ids), so a consolidated user and an untouched one can
    be searched side by side in one run."""
    from sqlalchemy import text

    with service.db.session() as session:
        for statement in filter(str.strip, _COPY_USER.split(";")):
            session.execute(text(statement), {"t": tenant_id, "u": user, "twin": twin})


def side_by_side(service: Any, ctx: Any, users: dict[str, str], rounds: int = 5) -> dict[str, Any]:
    """Search latency of several users (or settings) with their queries interleaved, so load from
    other processes on a shared machine falls on all alike; each user's p50/p95 and the ratios of
    the medians to the first's."""
    from memsvc.schemas import SearchRequest

    for user in users.values():
        service.search(ctx, SearchRequest(query="warm up", user_id=user))  # load each corpus
    times: dict[str, list[float]] = {name: [] for name in users}
    for _ in range(rounds):
        for q in QUERIES:
            for name, user in users.items():
                t0 = time.perf_counter()
                service.search(ctx, SearchRequest(query=q, user_id=user, limit=10))
                times[name].append((time.perf_counter() - t0) * 1000)
    first = percentile(next(iter(times.values())), 50)
    return {
        name: {
            "p50_ms": percentile(t, 50),
            "p95_ms": percentile(t, 95),
            "p50_ratio": percentile(t, 50) / first,
            "n": len(t),
        }
        for name, t in times.items()
    }


def use_recording_overhead(service: Any, ctx: Any, user: str, rounds: int = 5) -> dict[str, Any]:
    """Search latency with and without counting uses (the recorder swapped in and out between
    alternating queries on one user), and how long the background flush took."""
    from memsvc.schemas import SearchRequest

    recorder = service.uses
    service.search(ctx, SearchRequest(query="warm up", user_id=user))
    times: dict[str, list[float]] = {"counting uses": [], "not counting": []}
    for _ in range(rounds):
        for q in QUERIES:
            for name in times:
                service.uses = recorder if name == "counting uses" else None
                t0 = time.perf_counter()
                service.search(ctx, SearchRequest(query=q, user_id=user, limit=10))
                times[name].append((time.perf_counter() - t0) * 1000)
    service.uses = recorder
    t0 = time.perf_counter()
    written = recorder.flush() if recorder is not None else 0
    flush_ms = (time.perf_counter() - t0) * 1000
    on, off = percentile(times["counting uses"], 50), percentile(times["not counting"], 50)
    return {
        **{name: {"p50_ms": percentile(t, 50), "p95_ms": percentile(t, 95)} for name, t in times.items()},
        "p50_ratio": on / off,
        "flush_ms": flush_ms,
        "uses_written_in_flush": written,
    }


def scale(n: int, seed: int) -> dict[str, Any]:
    # Uses are written only when asked, so the flush measured at the end writes all of them.
    service, ctx = fresh_service(search_backend="exact", consolidation_uses_flush_s=86400)
    user, twin = "long-lived", "long-lived-untouched"
    rows = synthetic_rows(n, random.Random(seed), datetime(2023, 1, 1, tzinfo=UTC))
    t0 = time.perf_counter()
    load_synthetic(service, ctx.tenant_id, user, rows)
    copy_user(service, ctx.tenant_id, user, twin)
    load_s = time.perf_counter() - t0
    before = active_count(service, ctx.tenant_id, user)
    report = service.consolidate(ctx.tenant_id, user)
    after = active_count(service, ctx.tenant_id, user)
    # Archived rows stay in the cached corpus (out of results) until purged: 31 days later they go.
    purge = service.consolidate(ctx.tenant_id, user, now=datetime.now(UTC) + timedelta(days=31))
    latency = side_by_side(service, ctx, {"before (untouched twin)": twin, "after run and purge": user})
    uses = use_recording_overhead(service, ctx, user)
    service.close()
    return {
        "rows": len(rows),
        "load_s": load_s,
        "run_s": report.seconds,
        "totals": report.totals(),
        "purge_run": {"s": purge.seconds, **purge.totals()},
        "memories_before": before,
        "memories_after": after,
        "search": latency,
        "uses": uses,
    }


def locomo_paths(names: list[str]) -> list[Path]:
    """The LoCoMo files to run: `names` (all of shared/data/locomo when empty). Exits with a message
    naming what is missing rather than measuring fewer conversations than asked for."""
    if not LOCOMO_DIR.is_dir():
        raise SystemExit(f"LoCoMo data not found: {LOCOMO_DIR} is no directory (shared/data/README.md)")
    paths = [LOCOMO_DIR / f"{name}.json" for name in names] or sorted(LOCOMO_DIR.glob("conv-*.json"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"LoCoMo conversations not found: {', '.join(missing)}")
    if not paths:
        raise SystemExit(f"no LoCoMo conversations (conv-*.json) in {LOCOMO_DIR}")
    return paths


def locomo(conversations: list[str], count_uses: bool = False) -> dict[str, Any]:
    """Before and after a run on LoCoMo conversations (all of them when `conversations` is empty)."""
    from bench.retrieval import load_locomo

    return before_after([load_locomo(p.stem) for p in locomo_paths(conversations)], count_uses)


def beam(chats: list[str]) -> dict[str, Any]:
    """Before and after a run on BEAM chats (user–assistant): a check on conversations of another
    shape than the ones the forgetting rules were chosen on."""
    from bench.retrieval import BEAM_DIR, MAX_MESSAGE_CHARS, load_beam

    missing = [c for c in chats if not (BEAM_DIR / c).is_dir()]
    if missing or not chats:
        raise SystemExit(f"BEAM chats not found in {BEAM_DIR}: {', '.join(missing) or 'none named'}")
    return before_after([load_beam(c) for c in chats], max_content_chars=MAX_MESSAGE_CHARS)


def before_after(
    conversations: list[Any], count_uses: bool = False, max_content_chars: int | None = None
) -> dict[str, Any]:
    """Ingest each conversation (`bench.retrieval.Conversation`) as one user, ask its questions,
    run consolidation, ask them again: the retrieval figures before and after, and what changed."""
    from bench.retrieval import KS, Scores, result_words
    from memsvc.schemas import SearchRequest

    overrides = {"max_content_chars": max_content_chars} if max_content_chars else {}
    service, ctx = fresh_service(None, **overrides)
    # The questions must not vote on what is forgotten: a search counts as a use of what it
    # returns, and a use keeps a memory, so asking them before the run would shield their own
    # results from it (and a use at today's date is years after a LoCoMo user's clock).
    # (`count_uses`: as the figures before 2026-12-02 were measured, to compare.)
    recorder = service.uses
    if not count_uses:
        service.uses = None
    data = {conv.batches[0].user_id: conv for conv in conversations}
    session_of: dict[str, dict[str, str]] = {}
    for user, conv in data.items():
        session_of[user] = {m.id or "": b.session_id or "" for b in conv.batches for m in b.messages}
        for batch in conv.batches:
            outcome = service.run_ingest_job(service.submit_ingest(ctx, batch))
            if outcome.status != "succeeded":
                raise SystemExit(f"ingest of {user} failed: {outcome.error}")

    def evaluate() -> tuple[dict[str, Any], list[tuple[str, list[tuple[str, str, int, str]]]]]:
        scores = Scores()
        tops = []  # each question's top 10: (id, kind, words, text), to trace what a run changed
        for user, conv in data.items():
            for q in conv.questions:
                results = service.search(ctx, SearchRequest(query=q.text, user_id=user, limit=max(KS)))
                ours = [(r.source_message_ids, result_words(r.speaker, r.kind, r.content)) for r in results]
                scores.add(q.category, q.evidence, ours, session_of[user])
                top = [
                    (str(r.id), r.kind, n, r.content[:100])
                    for r, (_, n) in zip(results[:10], ours, strict=False)
                ]
                tops.append((q.text, top))
        summary = scores.summary()
        if not summary["questions"]:
            raise SystemExit(f"no questions with evidence in {list(data)}")
        return summary, tops

    before, tops_before = evaluate()
    if recorder is not None and count_uses:
        recorder.flush()  # every use counted before the run, not only those of the last flush period
    counts_before = {u: active_count(service, ctx.tenant_id, u) for u in data}
    report = service.consolidate(ctx.tenant_id)
    after, tops_after = evaluate()
    counts_after = {u: active_count(service, ctx.tenant_id, u) for u in data}
    service.uses = recorder
    service.close()
    return {
        "conversations": [conv.name for conv in data.values()],
        "before": before,
        "after": after,
        "memories_before": sum(counts_before.values()),
        "memories_after": sum(counts_after.values()),
        "run_s": report.seconds,
        "totals": report.totals(),
        "examples": [e for u in report.users for e in u.examples][:40],
        "changed_top10": changed_top10(tops_before, tops_after),
    }


def changed_top10(
    before: list[tuple[str, list[tuple[str, str, int, str]]]],
    after: list[tuple[str, list[tuple[str, str, int, str]]]],
) -> list[dict[str, Any]]:
    """The questions whose top 10 a run changed: the words it added or saved, what left, what came."""
    changed = []
    for (question, old), (_, new) in zip(before, after, strict=True):
        old_ids, new_ids = {r[0] for r in old}, {r[0] for r in new}
        words = sum(r[2] for r in new) - sum(r[2] for r in old)
        if old_ids != new_ids or words:
            changed.append(
                {
                    "question": question,
                    "words": words,
                    "left": [r[1:] for r in old if r[0] not in new_ids],
                    "came": [r[1:] for r in new if r[0] not in old_ids],
                }
            )
    return changed


FACT_CONVERSATIONS = ["conv-43", "conv-44", "conv-47", "conv-48"]  # the report half of LoCoMo
LABELS = Path(__file__).resolve().parent / "labels" / "locomo_facts.json"


def fact_precision(sample_size: int, seed: int, labels_path: Path) -> dict[str, Any]:
    """Fact precision on LoCoMo: the facts extracted from the report-half conversations, a seeded
    sample of them labelled by hand (`labels_path`: the rule and one label per fact), the share a
    person would want remembered among the sampled facts stored, and among those of them still in
    search (active) after a consolidation run. Without labels it writes the sample to label."""
    from sqlalchemy import select

    from memsvc.importers import locomo_batches
    from memsvc.models import Memory, MemorySource

    service, ctx = fresh_service()
    stored: list[dict[str, Any]] = []
    for path in locomo_paths(FACT_CONVERSATIONS):
        name = path.stem
        conv = json.loads(path.read_text())
        for batch in locomo_batches(conv, name):
            outcome = service.run_ingest_job(service.submit_ingest(ctx, batch))
            assert outcome.status == "succeeded", outcome.error
        with service.db.session() as session:
            rows = session.execute(
                select(Memory.id, Memory.content, Memory.kind, Memory.valid_from).where(
                    Memory.tenant_id == ctx.tenant_id, Memory.user_id == name, Memory.type == "semantic"
                )
            ).all()
            sources: dict[uuid.UUID, list[str]] = {}
            for memory_id, message_id in session.execute(
                select(MemorySource.memory_id, MemorySource.message_id).where(MemorySource.user_id == name)
            ).all():
                sources.setdefault(memory_id, []).append(message_id)
        stored += [
            {
                "conversation": name,
                "id": r.id,
                "content": r.content,
                "kind": r.kind,
                "valid_from": r.valid_from.date().isoformat() if r.valid_from else None,
                "sources": sorted(sources.get(r.id, [])),
            }
            for r in rows
        ]
    stored.sort(key=lambda f: (f["conversation"], f["content"], f["sources"]))
    sample = random.Random(seed).sample(stored, min(sample_size, len(stored)))
    sample.sort(key=lambda f: (f["conversation"], f["content"], f["sources"]))
    report = service.consolidate(ctx.tenant_id)
    with service.db.session() as session:
        status = dict(
            session.execute(
                select(Memory.id, Memory.status).where(Memory.id.in_([f["id"] for f in stored]))
            ).all()
        )
    service.close()
    out: dict[str, Any] = {
        "conversations": FACT_CONVERSATIONS,
        "facts_stored": len(stored),
        "sample": len(sample),
        "consolidation": report.totals(),
    }
    if not labels_path.exists():
        labels_path.parent.mkdir(parents=True, exist_ok=True)
        unlabelled = [{k: v for k, v in f.items() if k != "id"} | {"want": None} for f in sample]
        labels_path.write_text(json.dumps({"rule": "", "facts": unlabelled}, indent=1, ensure_ascii=False))
        out["wrote_sample_to_label"] = str(labels_path)
        return out
    # The labelled facts, found among those stored now (an extractor changed since the labels were
    # made stores some of them no more: counted as unmatched).
    labelled = json.loads(labels_path.read_text())
    by_key = {(f["conversation"], f["content"], tuple(f["sources"])): f for f in stored}
    before, after, unmatched = [], [], 0
    for item in labelled["facts"]:
        f = by_key.get((item["conversation"], item["content"], tuple(item["sources"])))
        if f is None:
            unmatched += 1
            continue
        before.append(bool(item["want"]))
        if status.get(f["id"]) == "active":
            after.append(bool(item["want"]))
    out |= {
        "labelled_matched": len(before),
        "unmatched": unmatched,
        "precision_before": sum(before) / max(len(before), 1),
        "precision_after": sum(after) / max(len(after), 1),
        "active_after": len(after),
        "wanted_kept": sum(after),
        "wanted_before": sum(before),
    }
    return out


ENTITY_PAIRS = Path(__file__).resolve().parent / "labels" / "entity_pairs.json"
ENTITY_THRESHOLDS = (0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.95)


def entity_merge_thresholds(labels_path: Path, thresholds: tuple[float, ...]) -> dict[str, Any]:
    """Entity merging by the cosine of the names' vectors, on hand-labelled pairs of extracted
    entity names (`labels_path`: the rule and one label per pair): for each threshold, the pairs
    it would merge, precision (of those, the same thing) and recall (of the pairs that are one
    thing, the share merged). Names are embedded as ingest embeds them (the name alone) by the
    encoder the service uses by default (settings as in the environment: int8 ONNX on a CPU)."""
    import numpy as np

    from memsvc.config import Settings
    from memsvc.embedding import configured_embedder, resolve_backend, resolve_device

    if not labels_path.is_file():
        raise SystemExit(f"entity pair labels not found: {labels_path}")
    settings = Settings()
    embedder = configured_embedder(settings)
    labelled = json.loads(labels_path.read_text())
    pairs = [p for p in labelled["pairs"] if p["same"] is not None]
    if not pairs:
        raise SystemExit(f"no labelled pairs in {labels_path}")
    names = sorted({n for p in pairs for n in (p["a"], p["b"])})
    vectors = dict(zip(names, np.asarray(embedder.embed(names), dtype=np.float32), strict=True))

    def cosine(a: str, b: str) -> float:
        u, v = vectors[a], vectors[b]
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    scored = [(cosine(p["a"], p["b"]), bool(p["same"]), p) for p in pairs]
    positives = sum(same for _, same, _ in scored)
    rows = []
    for t in thresholds:
        merged = [same for c, same, _ in scored if c >= t]
        rows.append(
            {
                "threshold": t,
                "merged": len(merged),
                "right": sum(merged),
                "precision": sum(merged) / len(merged) if merged else None,
                "recall": sum(merged) / positives if positives else None,
            }
        )
    return {
        "labels": str(labels_path),
        "backend": resolve_backend(settings.embedding_backend, resolve_device(settings.embedding_device)),
        "pairs": len(scored),
        "same": positives,
        "unsure_left_out": len(labelled["pairs"]) - len(pairs),
        "highest_different": max((c for c, same, _ in scored if not same), default=None),
        "same_cosines": sorted((round(c, 3) for c, same, _ in scored if same), reverse=True),
        "thresholds": rows,
        "closest": [
            {"cosine": round(c, 3), "same": same, "a": p["a"], "b": p["b"], "type": p["type"]}
            for c, same, p in sorted(scored, key=lambda x: -x[0])[:12]
        ],
    }


def print_before_after(result: dict[str, Any], label: str = "LoCoMo") -> None:
    """Before and after, for all questions and per category: recall, words, session hit."""
    figures = ["recall@5", "recall@10", "recall@20", "words@10", "recall@350w", "session_hit@5"]
    rows: list[list[Any]] = []
    b, a = result["before"], result["after"]
    parts = [("all", b, a)] + [(c, b["categories"][c], a["categories"][c]) for c in b["categories"]]
    for part, before, after in parts:
        for name in figures:
            rows.append([part, before["questions"], name, f"{before[name]:.4f}", f"{after[name]:.4f}"])
    print_table([f"{label} questions", "n", "figure", "before", "after"], rows)
    print(f"memories (not archived): {result['memories_before']} -> {result['memories_after']}")
    changed = result["changed_top10"]
    print(f"top 10 changed for {len(changed)} questions, {sum(c['words'] for c in changed):+d} words in all:")
    for c in changed:
        print(f"  {c['words']:+4d}  {c['question']}  (left: {len(c['left'])}, came: {len(c['came'])})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--memories", type=int, default=50_000, help="0 = skip the scale part")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--locomo", nargs="*", help="run the LoCoMo part (optionally: these conversations)")
    parser.add_argument("--beam", nargs="+", help="the same before/after check on these BEAM chats")
    parser.add_argument(
        "--facts", type=int, default=0, help="fact precision on a labelled sample of this many LoCoMo facts"
    )
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument(
        "--count-question-uses",
        action="store_true",
        help="LoCoMo: count the questions asked before the run as uses (they then keep what they found)",
    )
    parser.add_argument(
        "--entity-pairs",
        type=Path,
        nargs="?",
        const=ENTITY_PAIRS,
        help="entity-merge precision/recall by threshold on labelled name pairs (default file: %(const)s)",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    out: dict[str, Any] = {"args": vars(args), "machine": machine()}
    if args.memories:
        result = scale(args.memories, args.seed)
        out["scale"] = result
        print_table(
            ["synthetic user (interleaved queries)", "p50 ms", "p95 ms", "p50 ratio"],
            [
                [name, f"{v['p50_ms']:.1f}", f"{v['p95_ms']:.1f}", f"{v['p50_ratio']:.2f}"]
                for name, v in result["search"].items()
            ],
        )
        u, on, off = result["uses"], result["uses"]["counting uses"], result["uses"]["not counting"]
        print(
            f"counting uses: p50 {on['p50_ms']:.1f} ms vs {off['p50_ms']:.1f} ms"
            f" (ratio {u['p50_ratio']:.3f});"
            f" flush of {u['uses_written_in_flush']} uses {u['flush_ms']:.0f} ms"
        )
        memories = f"{result['memories_before']} -> {result['memories_after']}"
        print(
            f"memories {memories}; run {result['run_s']:.1f} s: {result['totals']};"
            f" purge run {result['purge_run']['s']:.1f} s"
        )
    if args.locomo is not None:
        result = locomo(args.locomo, count_uses=args.count_question_uses)
        out["locomo"] = result
        print_before_after(result)
        print(f"run {result['run_s']:.1f} s: {result['totals']}")
    if args.beam is not None:
        result = beam(args.beam)
        out["beam"] = result
        print_before_after(result, "BEAM")
        print(f"run {result['run_s']:.1f} s: {result['totals']}")
    if args.facts:
        result = fact_precision(args.facts, args.seed, args.labels)
        out["facts"] = result
        if "precision_before" in result:
            print_table(
                ["LoCoMo facts (labelled sample)", "before", "after"],
                [
                    ["facts", result["labelled_matched"], result["active_after"]],
                    ["wanted", result["wanted_before"], result["wanted_kept"]],
                    ["precision", f"{result['precision_before']:.3f}", f"{result['precision_after']:.3f}"],
                ],
            )
        else:
            print(f"label the sample in {result['wrote_sample_to_label']} and run again")
    if args.entity_pairs is not None:
        result = entity_merge_thresholds(args.entity_pairs, ENTITY_THRESHOLDS)
        out["entity_pairs"] = result
        print_table(
            ["entity merge cosine", "pairs merged", "same thing", "precision", "recall"],
            [
                [
                    f"{r['threshold']:.2f}",
                    r["merged"],
                    r["right"],
                    "-" if r["precision"] is None else f"{r['precision']:.3f}",
                    "-" if r["recall"] is None else f"{r['recall']:.3f}",
                ]
                for r in result["thresholds"]
            ],
        )
        print(
            f"{result['pairs']} labelled pairs ({result['same']} the same thing, {result['unsure_left_out']}"
            f" unsure left out), {result['backend']} vectors; highest cosine of two different things"
            f" {result['highest_different']:.3f}; pairs that are one thing: {result['same_cosines']}"
        )
    path = write_json("consolidation", out, args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
