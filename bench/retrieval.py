"""Retrieval across data sets (issue 19): LoCoMo and BEAM through the pipeline the API runs.

Each conversation is ingested as one user through the job path the queue runs
(`submit_ingest` + `run_ingest_job`), then every question is asked through the same
`MemoryService.search` the API calls (top 20). Scored per set and per category:

- recall@5/10/20: share of a question's evidence messages covered by the top k results; a result
  covers the messages in its provenance only if it came from at most 5 of them (shared/data/README.md);
- words@10: the words of the top 10 results (a turn with a speaker's name costs one more);
- recall@350w: the evidence covered by the results that fit, whole and in order, in 350 words;
- session hit@5: share of questions with a session holding evidence among the sessions of the top 5
  (a result stands for a session when all its provenance lies in that one session);
- search latency p50/p95.

Baselines from the same script over the same messages: dense (all-MiniLM-L6-v2 over each raw
message as "speaker: text") and BM25 (raw text; k1 1.2, b 0.75, no stemming).

The split is fixed here (SPLIT) and nowhere else: settings are chosen on the tune halves, figures
are reported on the report halves. Nothing is cached across runs: each run ingests into a new
database.

    python bench/retrieval.py [--half tune|report|all] [--sets locomo beam] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench._common import LOCOMO_DIR, ROOT, fresh_service, machine, percentile, print_table, write_json

BEAM_DIR = ROOT.parent / "shared" / "data" / "beam"
CPU_RESULTS_DIR = ROOT / "bench" / "cpu_results"
MAX_MESSAGE_CHARS = 400_000
KS = (5, 10, 20)
WORD_BUDGET = 350
SESSION_K = 5
MAX_TURNS_PER_RESULT = 5
# LoCoMo's categories 1-4 (5, adversarial, has no evidence in the conversation).
CATEGORIES = (1, 2, 3, 4)
LOCOMO_CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}

# The one split: choose on "tune", report on "report"; never per conversation, never per set.
SPLIT: dict[str, dict[str, tuple[str, ...]]] = {
    "locomo": {
        "tune": ("conv-26", "conv-30", "conv-41", "conv-42"),
        "report": ("conv-43", "conv-44", "conv-47", "conv-48"),
    },
    "beam": {
        "tune": ("1", "2", "3", "4", "5", "6", "7"),
        "report": ("8", "9", "10", "11", "12", "13", "14"),
    },
}


# ---- the metric -------------------------------------------------------------------------------

Result = tuple[Sequence[str], int]  # (provenance: message ids, words it costs in a context)


def covered(results: Sequence[Result], k: int) -> set[str]:
    """Messages covered by the top k: the provenance of each result that came from ≤ 5 messages."""
    turns: set[str] = set()
    for sources, _words in results[:k]:
        if len(sources) <= MAX_TURNS_PER_RESULT:
            turns.update(sources)
    return turns


def covered_within(results: Sequence[Result], budget: int = WORD_BUDGET) -> set[str]:
    """Messages covered by the results that fit, whole and in order, in the first `budget` words."""
    used = 0
    fitting = 0
    for _sources, words in results:
        if used + words > budget:
            break
        used += words
        fitting += 1
    return covered(results, fitting)


def session_hit(
    results: Sequence[Result], evidence: set[str], session_of: Mapping[str, str], k: int = SESSION_K
) -> bool:
    """Whether a result of the top k stands for a session that holds evidence (all its provenance
    lies in that one session: a digest of one session counts, an entity across sessions does not)."""
    wanted = {session_of[e] for e in evidence if e in session_of}
    for sources, _words in results[:k]:
        sessions = {session_of.get(s) for s in sources}
        if len(sessions) == 1 and (only := sessions.pop()) is not None and only in wanted:
            return True
    return False


def result_words(speaker: str | None, kind: str | None, content: str) -> int:
    # What the result costs in a context block: a single turn or a passage of a message is shown
    # with its speaker's name.
    return len(content.split()) + (1 if kind in ("turn", "passage") and speaker else 0)


class Scores:
    """Per-category recall@k, words, recall within the word budget, session hit@5 and latency."""

    def __init__(self) -> None:
        self.recall: dict[int, dict[Any, list[float]]] = {k: defaultdict(list) for k in KS}
        self.words: dict[int, dict[Any, list[int]]] = {k: defaultdict(list) for k in KS}
        self.within: dict[Any, list[float]] = defaultdict(list)
        self.hit: dict[Any, list[float]] = defaultdict(list)
        self.latency_ms: list[float] = []

    def add(
        self,
        category: Any,
        evidence: set[str],
        results: Sequence[Result],
        session_of: Mapping[str, str] | None = None,
    ) -> None:
        for k in KS:
            self.recall[k][category].append(len(evidence & covered(results, k)) / len(evidence))
            self.words[k][category].append(sum(w for _, w in results[:k]))
        self.within[category].append(len(evidence & covered_within(results)) / len(evidence))
        if session_of is not None:
            self.hit[category].append(float(session_hit(results, evidence, session_of)))

    def _figures(self, categories: Iterable[Any]) -> dict[str, float]:
        cats = list(categories)

        def mean(table: Mapping[Any, list[Any]]) -> float:
            values = [v for c in cats for v in table.get(c, [])]
            return float(np.mean(values)) if values else math.nan

        out = {f"recall@{k}": mean(self.recall[k]) for k in KS}
        out.update({f"words@{k}": mean(self.words[k]) for k in KS})
        out[f"recall@{WORD_BUDGET}w"] = mean(self.within)
        out[f"session_hit@{SESSION_K}"] = mean(self.hit)
        out["questions"] = sum(len(self.recall[KS[0]].get(c, [])) for c in cats)
        return out

    def summary(self) -> dict[str, Any]:
        categories = sorted(self.recall[KS[0]], key=str)
        out: dict[str, Any] = self._figures(categories)
        out["categories"] = {str(c): self._figures([c]) for c in categories}
        if self.latency_ms:
            out["p50_ms"] = percentile(self.latency_ms, 50)
            out["p95_ms"] = percentile(self.latency_ms, 95)
        return out


_PLAIN = re.compile(r"[a-z0-9]+")


class PlainBM25:
    """The baseline: Okapi BM25 over raw message text, no stemming, no stop words."""

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


# ---- the data sets ----------------------------------------------------------------------------


@dataclass
class Question:
    text: str
    category: Any
    evidence: set[str]


@dataclass
class Conversation:
    set: str
    name: str
    batches: list[Any]  # AddRequest
    questions: list[Question]
    session_of: dict[str, str] = field(default_factory=dict)


def evidence_turns(raw: list[str]) -> set[str]:
    """Evidence ids as LoCoMo writes them ('D8:6; D9:17', 'D:11:26') → {'D8:6', 'D9:17', 'D11:26'}."""
    out = set()
    for item in raw:
        for part in re.split(r"[;,\s]+", item):
            part = part.strip()
            if re.fullmatch(r"D:?\d+:\d+", part):
                out.add(part.replace("D:", "D"))
    return out


def beam_evidence(raw: Any) -> set[str]:
    """BEAM's `source_chat_ids`: a list of message ids, or a dict of such lists (flattened)."""
    if isinstance(raw, dict):
        return {e for value in raw.values() for e in beam_evidence(value)}
    if isinstance(raw, list):
        return {str(e) for e in raw if isinstance(e, int | str) and str(e).strip()}
    return set()


def load_locomo(name: str) -> Conversation:
    from memsvc.importers import locomo_batches

    data = json.loads((LOCOMO_DIR / f"{name}.json").read_text())
    user = f"locomo-{name}"
    questions = [
        Question(q["question"], q["category"], evidence_turns(q.get("evidence", [])))
        for q in data["qa"]
        if q.get("category") in CATEGORIES
    ]
    return Conversation(
        "locomo", name, list(locomo_batches(data, user)), [q for q in questions if q.evidence]
    )


def load_beam(name: str) -> Conversation:
    from memsvc.importers import beam_batches

    folder = BEAM_DIR / name
    chat = next(p for p in (folder / "chat.json", folder / "chat_trunecated.json") if p.exists())
    batches = list(beam_batches(json.loads(chat.read_text()), f"beam-{name}"))
    ids = {m.id for b in batches for m in b.messages}
    questions = []
    for ability, items in json.loads((folder / "probing_questions.json").read_text()).items():
        for q in items:
            # Abstention questions have no evidence; ids the chat does not hold cannot be found.
            evidence = beam_evidence(q.get("source_chat_ids")) & ids
            if evidence:
                questions.append(Question(q["question"], ability, evidence))
    return Conversation("beam", name, batches, questions)


LOADERS = {"locomo": load_locomo, "beam": load_beam}


def load(sets: Sequence[str], half: str) -> list[Conversation]:
    conversations = []
    for name in sets:
        halves = ("tune", "report") if half == "all" else (half,)
        for h in halves:
            conversations.extend(LOADERS[name](c) for c in SPLIT[name][h])
    for conv in conversations:
        conv.session_of = {m.id: b.session_id for b in conv.batches for m in b.messages}
    return conversations


# ---- the run ----------------------------------------------------------------------------------


def run(
    conversations: list[Conversation],
    data_dir: Path | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Ingest and ask every conversation; `progress` gets the report so far after each one (a long
    run on a loaded machine leaves per-category figures for the conversations it finished)."""
    from memsvc.embedding import configured_embedder
    from memsvc.schemas import SearchRequest

    # BEAM chats 4 and 5 hold pasted documents of 349k and 53k characters in one message, past the
    # API's default limit (a 422): the benchmark admits them, so every chat is measured.
    service, ctx = fresh_service(data_dir, max_content_chars=MAX_MESSAGE_CHARS)
    # The dense baseline's own embedder, not the process's shared one: through that, a message
    # line that ingest had embedded came from its cache, made in an ingest batch, and int8 vectors
    # depend on their batch, so the baseline moved with whatever else ingest embedded (BEAM report
    # R@10 0.510 / 0.518 for the same messages; 0.5417 / 0.5409 over all chats when only the
    # extraction of facts changed).
    baseline_embedder = configured_embedder(service.settings, shared=False)
    names = ("memsvc", "dense", "bm25")
    systems: dict[str, dict[str, Scores]] = defaultdict(lambda: {n: Scores() for n in names})
    # The same per half ("beam/report"): a run of both halves reports each against its baselines.
    halves: dict[str, dict[str, Scores]] = defaultdict(lambda: {n: Scores() for n in names})
    per_conversation: dict[str, dict[str, Any]] = {}
    ingest: dict[str, dict[str, float]] = defaultdict(lambda: {"messages": 0, "words": 0, "seconds": 0.0})
    for conv in conversations:
        user = conv.batches[0].user_id
        started = time.perf_counter()
        for batch in conv.batches:
            outcome = service.run_ingest_job(service.submit_ingest(ctx, batch))
            assert outcome.status == "succeeded", outcome.error
        seconds = time.perf_counter() - started
        messages = [m for b in conv.batches for m in b.messages]
        ingest[conv.set]["seconds"] += seconds
        ingest[conv.set]["messages"] += len(messages)
        ingest[conv.set]["words"] += sum(len(m.content.split()) for m in messages)
        print(
            f"{conv.set} {conv.name}: ingested {len(messages)} messages in {seconds:.0f} s", file=sys.stderr
        )

        raw_vectors = baseline_embedder.embed([f"{m.name or m.role}: {m.content}" for m in messages])
        bm25 = PlainBM25([m.content for m in messages])
        baseline = [([m.id or ""], result_words(m.name or m.role, "turn", m.content)) for m in messages]
        mine = Scores()
        half = halves[f"{conv.set}/{half_of(conv)}"]
        for q in conv.questions:
            t0 = time.perf_counter()
            results = service.search(ctx, SearchRequest(query=q.text, user_id=user, limit=max(KS)))
            elapsed = (time.perf_counter() - t0) * 1000
            # The query's vector as the search made it, alone: embedded here with the other
            # questions first, the embedder's cache would hand the search a vector made in that
            # batch, and int8 vectors depend on their batch (LoCoMo report R@10 0.8030 vs 0.7986).
            qv = service.embedder.embed([q.text])[0]
            ours = [(r.source_message_ids, result_words(r.speaker, r.kind, r.content)) for r in results]
            for scores in (systems[conv.set]["memsvc"], half["memsvc"], mine):
                scores.add(q.category, q.evidence, ours, conv.session_of)
                scores.latency_ms.append(elapsed)
            for name, ranking in (("dense", raw_vectors @ qv), ("bm25", bm25.scores(q.text))):
                order = np.argsort(-ranking, kind="stable")[: max(KS)]
                for scores in (systems[conv.set][name], half[name]):
                    scores.add(q.category, q.evidence, [baseline[i] for i in order], conv.session_of)
        per_conversation[f"{conv.set}/{conv.name}"] = mine.summary()
        if progress is not None:
            progress(_report(systems, halves, per_conversation, ingest))
        print(
            f"{conv.set} {conv.name}: R@10 {per_conversation[f'{conv.set}/{conv.name}']['recall@10']:.3f}",
            file=sys.stderr,
        )
    service.close()
    return _report(systems, halves, per_conversation, ingest)


def half_of(conv: Conversation) -> str:
    return next(h for h, names in SPLIT[conv.set].items() if conv.name in names)


def _report(
    systems: Mapping[str, Mapping[str, Scores]],
    halves: Mapping[str, Mapping[str, Scores]],
    per_conversation: dict[str, dict[str, Any]],
    ingest: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    return {
        "sets": {s: {n: sc.summary() for n, sc in by.items()} for s, by in systems.items()},
        "halves": {h: {n: sc.summary() for n, sc in by.items()} for h, by in halves.items()},
        "per_conversation": per_conversation,
        "ingest": {
            s: {**v, "messages_per_s": v["messages"] / v["seconds"] if v["seconds"] else math.nan}
            for s, v in ingest.items()
        },
    }


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "memsvc"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def category_label(set_name: str, category: str) -> str:
    if set_name == "locomo" and category.isdigit():
        return f"{category} {LOCOMO_CATEGORY_NAMES.get(int(category), '')}"
    return category


def print_report(report: dict[str, Any]) -> None:
    headers = ["set", "system", "category", "n", "R@5", "R@10", "R@20", "words@10", "R@350w", "hit@5"]
    rows: list[list[Any]] = []
    for set_name, by_system in report["sets"].items():
        for system, s in by_system.items():
            parts = [("all", s)]
            if system == "memsvc":
                parts += [(category_label(set_name, c), v) for c, v in s["categories"].items()]
            for label, v in parts:
                rows.append(
                    [
                        set_name,
                        system,
                        label,
                        v["questions"],
                        v["recall@5"],
                        v["recall@10"],
                        v["recall@20"],
                        round(v["words@10"]),
                        v[f"recall@{WORD_BUDGET}w"],
                        v[f"session_hit@{SESSION_K}"],
                    ]
                )
    print_table(headers, rows)
    print()
    # Each half against its baselines: what the goals are read on.
    print_table(
        ["half", "system", "n", "R@10", "words@10", "R@350w", "R@10 - dense"],
        [
            [
                half,
                system,
                v["questions"],
                v["recall@10"],
                round(v["words@10"]),
                v[f"recall@{WORD_BUDGET}w"],
                v["recall@10"] - by["dense"]["recall@10"],
            ]
            for half, by in report["halves"].items()
            for system, v in by.items()
        ],
    )
    print()
    print_table(
        ["set", "search p50 ms", "p95 ms", "ingest messages", "ingest s", "messages/s"],
        [
            [
                s,
                by["memsvc"].get("p50_ms", "-"),
                by["memsvc"].get("p95_ms", "-"),
                int(report["ingest"][s]["messages"]),
                round(report["ingest"][s]["seconds"]),
                report["ingest"][s]["messages_per_s"],
            ]
            for s, by in report["sets"].items()
        ],
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--half", choices=("tune", "report", "all"), default="report")
    parser.add_argument("--sets", nargs="+", choices=tuple(SPLIT), default=list(SPLIT))
    parser.add_argument(
        "--json", help="where to write the JSON (default bench/cpu_results/retrieval_<half>.json)"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="put the (new) database here instead of a temporary folder"
    )
    args = parser.parse_args(argv)
    conversations = load(args.sets, args.half)
    code = commit()  # before the run: the code it imports, not what others commit meanwhile
    started = time.perf_counter()
    target = Path(args.json) if args.json else CPU_RESULTS_DIR / f"retrieval_{args.half}.json"

    def partial(report: dict[str, Any]) -> None:
        done = list(report["per_conversation"])
        write_json("retrieval", {**report, "partial": True, "done": done, "commit": code}, str(target))

    report = run(conversations, args.data_dir, partial)
    report.update(
        half=args.half,
        split={s: SPLIT[s] for s in args.sets},
        commit=code,
        machine=machine(),
        wall_s=time.perf_counter() - started,
    )
    print_report(report)
    print(f"\nwrote {write_json('retrieval', report, str(target))}")
    return report


if __name__ == "__main__":
    main()
