"""LoCoMo retrieval benchmark: recall@k of the evidence turns, context words and search latency.

Each conversation in shared/data/locomo is ingested as one user through the real pipeline (the
job path the queue runs), then every question of categories 1-4 is asked through the same search
the API uses. A result covers the turns in its provenance only if it came from at most 5 turns
(shared/data/README.md). Baselines computed by the same script on the same turns: plain dense
(all-MiniLM-L6-v2 over each turn as "speaker: text") and plain BM25 (raw text; k1 1.2, b 0.75, no
stemming).

    python bench/locomo.py [--conversations conv-26 conv-30] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm import tqdm

from bench._common import LOCOMO_DIR, fresh_service, machine, percentile, print_table, write_json

KS = (5, 10, 20)
CATEGORIES = (1, 2, 3, 4)
MAX_TURNS_PER_RESULT = 5


def evidence_turns(raw: list[str]) -> set[str]:
    """Evidence ids as the dataset writes them ('D8:6; D9:17', 'D:11:26') → {'D8:6', 'D9:17', 'D11:26'}."""
    out = set()
    for item in raw:
        for part in re.split(r"[;,\s]+", item):
            part = part.strip()
            if re.fullmatch(r"D:?\d+:\d+", part):
                out.add(part.replace("D:", "D"))
    return out


def covered(results: list[tuple[list[str], int]], k: int) -> set[str]:
    turns: set[str] = set()
    for sources, _words in results[:k]:
        if len(sources) <= MAX_TURNS_PER_RESULT:
            turns.update(sources)
    return turns


class Scores:
    def __init__(self) -> None:
        self.recall: dict[int, dict[int, list[float]]] = {k: defaultdict(list) for k in KS}
        self.words: dict[int, list[int]] = {k: [] for k in KS}
        self.latency_ms: list[float] = []

    def add(self, category: int, evidence: set[str], results: list[tuple[list[str], int]]) -> None:
        for k in KS:
            self.recall[k][category].append(len(evidence & covered(results, k)) / len(evidence))
            self.words[k].append(sum(w for _, w in results[:k]))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in KS:
            everything = [v for c in CATEGORIES for v in self.recall[k][c]]
            out[f"recall@{k}"] = float(np.mean(everything)) if everything else math.nan
            for c in CATEGORIES:
                out[f"cat{c}_recall@{k}"] = (
                    float(np.mean(self.recall[k][c])) if self.recall[k][c] else math.nan
                )
            out[f"words@{k}"] = float(np.mean(self.words[k])) if self.words[k] else math.nan
        if self.latency_ms:
            out["p50_ms"] = percentile(self.latency_ms, 50)
            out["p95_ms"] = percentile(self.latency_ms, 95)
        out["questions"] = sum(len(v) for v in self.recall[KS[0]].values())
        return out


_PLAIN = re.compile(r"[a-z0-9]+")


class PlainBM25:
    """The baseline: Okapi BM25 over raw turn text, no stemming, no stop words."""

    def __init__(self, docs: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = [Counter(_PLAIN.findall(d.lower())) for d in docs]
        self.lengths = np.array([sum(d.values()) for d in self.docs], dtype=np.float64)
        self.df = Counter(t for d in self.docs for t in d)
        self.avg = float(self.lengths.mean()) if len(self.docs) else 1.0

    def scores(self, query: str) -> np.ndarray:
        n = len(self.docs)
        out = np.zeros(n)
        for term in set(_PLAIN.findall(query.lower())):
            df = self.df.get(term)
            if not df:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for i, d in enumerate(self.docs):
                tf = d.get(term)
                if tf:
                    out[i] += (
                        idf
                        * tf
                        * (self.k1 + 1)
                        / (tf + self.k1 * (1 - self.b + self.b * self.lengths[i] / self.avg))
                    )
        return out


def result_words(speaker: str | None, kind: str | None, content: str) -> int:
    # What the result costs in a context block: a single turn is shown with its speaker's name.
    return len(content.split()) + (1 if kind == "turn" and speaker else 0)


def run(conversations: list[Path], data_dir: Path | None) -> dict[str, Any]:
    from memsvc.importers import locomo_batches
    from memsvc.schemas import SearchRequest

    service, ctx = fresh_service(data_dir)
    systems = {"memsvc": Scores(), "dense_turns": Scores(), "bm25_turns": Scores()}
    per_conversation: dict[str, dict[str, Any]] = {}
    ingest_s = 0.0
    turns_total = 0
    for path in conversations:
        data = json.loads(path.read_text())
        user = path.stem
        batches = list(locomo_batches(data, user))
        started = time.perf_counter()
        new_turns = 0
        for batch in tqdm(batches, desc=f"ingest {user}", unit="session", file=sys.stderr):
            outcome = service.run_ingest_job(service.submit_ingest(ctx, batch))
            new_turns += len(batch.messages) - (outcome.result.duplicates if outcome.result else 0)
        ingest_s += time.perf_counter() - started
        turns = [(m.id, m.name, m.content) for b in batches for m in b.messages]
        turns_total += new_turns

        raw_vectors = service.embedder.embed([f"{t[1]}: {t[2]}" for t in turns])
        bm25 = PlainBM25([t[2] for t in turns])
        questions = [
            q for q in data["qa"] if q.get("category") in CATEGORIES and evidence_turns(q.get("evidence", []))
        ]
        query_vectors = service.embedder.embed([q["question"] for q in questions])
        mine = Scores()
        for q, qv in zip(
            tqdm(questions, desc=f"search {user}", unit="q", file=sys.stderr), query_vectors, strict=True
        ):
            evidence = evidence_turns(q["evidence"])
            t0 = time.perf_counter()
            results = service.search(ctx, SearchRequest(query=q["question"], user_id=user, limit=max(KS)))
            elapsed = (time.perf_counter() - t0) * 1000
            ours = [(r.source_message_ids, result_words(r.speaker, r.kind, r.content)) for r in results]
            for scores in (systems["memsvc"], mine):
                scores.add(q["category"], evidence, ours)
                scores.latency_ms.append(elapsed)
            order = np.argsort(-(raw_vectors @ qv), kind="stable")[: max(KS)]
            systems["dense_turns"].add(
                q["category"],
                evidence,
                [([turns[i][0]], result_words(turns[i][1], "turn", turns[i][2])) for i in order],
            )
            order = np.argsort(-bm25.scores(q["question"]), kind="stable")[: max(KS)]
            systems["bm25_turns"].add(
                q["category"],
                evidence,
                [([turns[i][0]], result_words(turns[i][1], "turn", turns[i][2])) for i in order],
            )
        per_conversation[user] = mine.summary()
    return {
        "systems": {name: s.summary() for name, s in systems.items()},
        "per_conversation": per_conversation,
        # A re-run on a kept --data-dir finds every turn stored already: no ingest figure then.
        "ingest": {"new_turns": turns_total, "seconds": ingest_s, "turns_per_s": turns_total / ingest_s}
        if turns_total
        else None,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", nargs="*", help="e.g. conv-26 conv-30 (default: all)")
    parser.add_argument("--json", help="where to write the JSON (default bench/results/locomo.json)")
    parser.add_argument("--data-dir", type=Path, help="keep the database here; a re-run then skips ingest")
    args = parser.parse_args()
    paths = sorted(LOCOMO_DIR.glob("conv-*.json"))
    if args.conversations:
        paths = [p for p in paths if p.stem in set(args.conversations)]
    if not paths:
        raise SystemExit(f"no LoCoMo conversations found in {LOCOMO_DIR}")
    report = run(paths, args.data_dir)
    rows = []
    for name, s in report["systems"].items():
        rows.append(
            [
                name,
                *(s[f"cat{c}_recall@10"] for c in CATEGORIES),
                s["recall@5"],
                s["recall@10"],
                s["recall@20"],
                s["words@10"],
                s.get("p50_ms", "-"),
                s.get("p95_ms", "-"),
            ]
        )
    print_table(
        ["system", "c1@10", "c2@10", "c3@10", "c4@10", "R@5", "R@10", "R@20", "words@10", "p50 ms", "p95 ms"],
        rows,
    )
    print()
    print_table(
        ["conversation", "R@10", "words@10", "p95 ms"],
        [[u, s["recall@10"], s["words@10"], s["p95_ms"]] for u, s in report["per_conversation"].items()],
    )
    print(f"\nwrote {write_json('locomo', report, args.json)}")


if __name__ == "__main__":
    main()
