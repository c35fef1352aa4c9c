"""The agent loop through the REST API: write a turn (`wait: true`), then search, as an agent does
between two turns; one user at ~1k, ~5k and ~50k memories, and many users at once.

Starts `memsvc serve` (its ingest worker included) on a fresh embedded database on 127.0.0.1 and
drives it from this process over HTTP. Filling is quick: one LoCoMo conversation is ingested
through the API as a seed user, then copied in SQL under new ids (memories, provenance, entities,
mentions, relations) until each user holds the size asked for. Then, per size:

- `add`: POST /v1/memories with one message and `wait: true`;
- `search after write`: POST /v1/search right after that add returns (the corpus must catch up);
- `search`: POST /v1/search with no write before it.

Many users: `--users` users of one seed session range each, searched once in random order (cold:
the server has not loaded them) and once more in another random order (warm); the server's
resident memory before and after the cold pass gives the memory per cached memory.

    python bench/agent_loop.py [--sizes 1000 5000 50000] [--rounds 60] [--users 300] [--json PATH]

Side by side (on a loaded machine the only fair comparison): `--baseline-tree DIR` (a checkout of
another commit, e.g. `git archive <rev> | tar -x -C DIR`) and/or `--baseline-env KEY=VALUE ...`
start a second server, filled the same way, and every round runs on both, in alternating order;
the report has both and their ratios (current / baseline).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil

from bench._common import LOCOMO_DIR, machine, percentile, print_table, write_json

SEED = "seed"
# Columns given new values in a copy; every other column is copied as it is.
_NEW_ID = "md5({col}::text || %(sfx)s)::uuid"
COPIES: dict[str, dict[str, str]] = {
    "memories": {
        "id": _NEW_ID,
        "user_id": "%(user)s",
        "session_id": "{col} || %(sfx)s",
        "message_id": "{col} || %(sfx)s",
        "superseded_by": _NEW_ID,
    },
    "memory_sources": {
        "memory_id": _NEW_ID,
        "turn_id": _NEW_ID,
        "message_id": "{col} || %(sfx)s",
        "user_id": "%(user)s",
    },
    "entity_mentions": {
        "memory_id": _NEW_ID,
        "entity_id": "md5({col}::text || %(user)s)::uuid",
        "user_id": "%(user)s",
    },
}
GRAPH: dict[str, dict[str, str]] = {  # copied once per user: a user's entities are merged by name
    "entities": {"id": "md5({col}::text || %(user)s)::uuid", "user_id": "%(user)s"},
    "relations": {
        "id": "md5({col}::text || %(user)s)::uuid",
        "subject_id": "md5({col}::text || %(user)s)::uuid",
        "object_id": "md5({col}::text || %(user)s)::uuid",
        "memory_id": "NULL",  # the fact a relation came from is not read by search
        "user_id": "%(user)s",
    },
}


def start_server(
    data_dir: Path, port: int, tree: Path | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`memsvc serve` on `data_dir`; from the source tree `tree` when given (a baseline commit)."""
    env = {**os.environ, "MEMSVC_DATA_DIR": str(data_dir), "MEMSVC_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)  # ahead of the editable install of this checkout
    env.update(extra_env or {})
    log = (data_dir / "server.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "memsvc.cli", "serve"], env=env, stdout=log, stderr=log, cwd=tree
    )


def wait_ready(base: str, data_dir: Path, server: subprocess.Popen[bytes]) -> str:
    key_file = data_dir / "dev-api-key"
    deadline = time.monotonic() + 240
    while True:
        try:
            if key_file.exists() and httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return key_file.read_text().strip()
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit((data_dir / "server.log").read_text()[-3000:])
        time.sleep(0.5)


def copy_sql(conn: Any, table: str, overrides: dict[str, str], where: str) -> str:
    columns = [
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = %s AND is_generated = 'NEVER' ORDER BY ordinal_position",
            (table,),
        )
    ]
    values = [overrides[c].format(col=c) if c in overrides else c for c in columns]
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {table} WHERE {where}"


def fill(conn: Any, tenant: Any, user: str, copies: int, sessions: tuple[int, int] | None = None) -> int:
    """Give `user` `copies` copies of the seed user's rows (of seed sessions in `sessions`)."""
    seed = "tenant_id = %(t)s AND user_id = %(seed)s"
    params = {"t": tenant, "seed": SEED, "user": user}
    scope = {"memories": "", "memory_sources": "", "entity_mentions": ""}
    if sessions is not None:
        names = ", ".join(f"'session_{n}'" for n in range(*sessions))
        copied = f"SELECT id FROM memories WHERE {seed} AND session_id IN ({names})"
        scope["memories"] = f" AND session_id IN ({names})"
        scope["entity_mentions"] = f" AND memory_id IN ({copied})"
        # A fact said again in a later session cites that session's turn too, which is not copied.
        cited = f" AND (turn_id IS NULL OR turn_id IN ({copied}))"
        scope["memory_sources"] = scope["entity_mentions"] + cited
    for table, overrides in GRAPH.items():
        conn.execute(copy_sql(conn, table, overrides, seed), params)
    for c in range(copies):
        params["sfx"] = f"/{user}/{c}"
        for table in ("memories", "memory_sources", "entity_mentions"):
            conn.execute(copy_sql(conn, table, COPIES[table], seed + scope[table]), params)
    row = conn.execute("SELECT count(*) FROM memories WHERE tenant_id = %s AND user_id = %s", (tenant, user))
    return int(row.fetchone()[0])


def timed(http: httpx.Client, path: str, body: dict[str, Any], into: list[Any] | None = None) -> float:
    t0 = time.perf_counter()
    response = http.post(path, json=body)
    elapsed = (time.perf_counter() - t0) * 1000
    response.raise_for_status()
    if into is not None:  # an add's own account of where its time went
        into.append((response.json().get("result") or {}).get("timings_ms", {}))
    return elapsed


def stats(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "max_ms": max(values, default=float("nan")),
        "n": len(values),
    }


class Target:
    """One server under test: `current` (this checkout) or `baseline` (another tree or settings)."""

    def __init__(self, name: str, port: int, tree: Path | None, env: dict[str, str]) -> None:
        self.name = name
        self.tree = tree
        self.env = env
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"memsvc-loop-{name}-"))
        self.server = start_server(self.data_dir, port, tree, env)
        self.base = f"http://127.0.0.1:{port}"
        self.http: httpx.Client | None = None
        self.sized: dict[int, int] = {}
        self.many_rows = 0
        self.report: dict[str, Any] = {"sizes": {}}

    def connect(self) -> httpx.Client:
        key = wait_ready(self.base, self.data_dir, self.server)
        self.http = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=600)
        return self.http

    def stop(self) -> None:
        self.server.terminate()
        self.server.wait(timeout=60)


def fill_target(target: Target, conversation: dict[str, Any], sizes: list[int], many: list[str]) -> None:
    """The seed user through the API, then every sized user and the many users copied in SQL."""
    import psycopg

    from memsvc.database import libpq_url, start_embedded_postgres
    from memsvc.importers import locomo_batches

    assert target.http is not None
    t0 = time.perf_counter()
    for batch in locomo_batches(conversation, SEED):
        target.http.post(
            "/v1/memories", json={**batch.model_dump(mode="json"), "wait": True}
        ).raise_for_status()
    print(
        f"{target.name}: seed user ingested through the API in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )
    url = libpq_url(start_embedded_postgres(target.data_dir))
    with psycopg.connect(url, autocommit=True) as conn:
        tenant, seed_rows = conn.execute(
            "SELECT tenant_id, count(*) FROM memories WHERE user_id = %s GROUP BY tenant_id", (SEED,)
        ).fetchall()[0]
        for size in sizes:
            target.sized[size] = fill(conn, tenant, f"user-{size}", max(1, round(size / seed_rows)))
            print(f"{target.name}: user-{size}: {target.sized[size]} memories", file=sys.stderr)
        for i, user in enumerate(many):
            first = 1 + (i * 3) % 16
            target.many_rows += fill(conn, tenant, user, 1, sessions=(first, first + 3))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000, 50000])
    parser.add_argument("--rounds", type=int, default=60, help="adds (and searches after them) per size")
    parser.add_argument("--users", type=int, default=300, help="users of the many-users case (0: skip)")
    parser.add_argument("--seed-conversation", default="conv-26")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--baseline-tree", type=Path, help="source tree of a baseline server run beside")
    parser.add_argument("--baseline-env", nargs="*", default=[], help="KEY=VALUE settings of the baseline")
    parser.add_argument("--json")
    args = parser.parse_args()

    rng = random.Random(17)
    report: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg()}
    targets = [Target("current", args.port, None, {})]
    if args.baseline_tree or args.baseline_env:
        env = dict(kv.split("=", 1) for kv in args.baseline_env)
        tree = args.baseline_tree.resolve() if args.baseline_tree else None
        targets.append(Target("baseline", args.port + 1, tree, env))
    try:
        for target in targets:
            target.connect()
        conversation = json.loads((LOCOMO_DIR / f"{args.seed_conversation}.json").read_text())
        questions = [q["question"] for q in conversation["qa"] if q.get("category") in (1, 2, 3, 4)]
        # A query asked again is answered from the embedder's cache of recent texts: the timed
        # searches ask each question once, then again with the round number after it (new text).
        order, asked = rng.sample(questions, len(questions)), itertools.count()

        def question() -> str:
            n = next(asked)
            text = order[n % len(order)]
            return text if n < len(order) else f"{text} ({n})"

        from memsvc.importers import locomo_batches

        seed_lines = {m.content for b in locomo_batches(conversation, "x") for m in b.messages}
        # Each add says something the server has never embedded, once: its embedder keeps the
        # vectors of recent texts, and a line of the seed conversation would be timed without its
        # encoding. Lines of the other LoCoMo conversations, in a seeded random order.
        lines = sorted(
            {
                m.content
                for path in sorted(LOCOMO_DIR.glob("conv-*.json"))
                if path.stem != args.seed_conversation
                for b in locomo_batches(json.loads(path.read_text()), "x")
                for m in b.messages
            }
            - seed_lines
        )
        rng.shuffle(lines)
        many = [f"many-{i}" for i in range(args.users)]
        for target in targets:
            fill_target(target, conversation, args.sizes, many)

        def turns(i: int) -> list[Target]:  # alternate who goes first, so neither always runs second
            return targets if i % 2 == 0 else targets[::-1]

        for size in args.sizes:
            user = f"user-{size}"
            runs: dict[str, dict[str, list[Any]]] = {
                t.name: {"adds": [], "after": [], "plain": [], "parts": []} for t in targets
            }
            for target in targets:  # cold load, not timed
                assert target.http is not None
                timed(target.http, "/v1/search", {"query": questions[0], "user_id": user})
            for i in range(args.rounds):
                message = {
                    "role": "user",
                    "name": "Caroline",
                    "content": lines.pop(),
                    "id": f"loop-{i}",
                }
                add = {"user_id": user, "session_id": "loop", "messages": [message], "wait": True}
                query = {"query": question(), "user_id": user, "limit": 10}
                for target in turns(i):
                    assert target.http is not None
                    run = runs[target.name]
                    run["adds"].append(timed(target.http, "/v1/memories", add, run["parts"]))
                    run["after"].append(timed(target.http, "/v1/search", query))
            for i in range(args.rounds):
                query = {"query": question(), "user_id": user, "limit": 10}
                for target in turns(i):
                    assert target.http is not None
                    runs[target.name]["plain"].append(timed(target.http, "/v1/search", query))
            for target in targets:
                run = runs[target.name]
                parts = run["parts"]
                target.report["sizes"][str(size)] = {
                    "memories": target.sized[size],
                    "add": stats(run["adds"]),
                    "search_after_write": stats(run["after"]),
                    "search": stats(run["plain"]),
                    "add_server_ms_p50": {
                        k: percentile([p.get(k, 0.0) for p in parts], 50)
                        for k in sorted({k for p in parts for k in p})
                    },
                }

        if many:
            cold: dict[str, list[float]] = {t.name: [] for t in targets}
            warm: dict[str, list[float]] = {t.name: [] for t in targets}
            rss_before = {t.name: psutil.Process(t.server.pid).memory_info().rss for t in targets}
            for i, user in enumerate(rng.sample(many, len(many))):
                query = {"query": question(), "user_id": user, "limit": 10}
                for target in turns(i):
                    assert target.http is not None
                    cold[target.name].append(timed(target.http, "/v1/search", query))
            rss_after = {t.name: psutil.Process(t.server.pid).memory_info().rss for t in targets}
            for i, user in enumerate(rng.sample(many, len(many))):
                query = {"query": question(), "user_id": user, "limit": 10}
                for target in turns(i):
                    assert target.http is not None
                    warm[target.name].append(timed(target.http, "/v1/search", query))
            for target in targets:
                growth = rss_after[target.name] - rss_before[target.name]
                target.report["many_users"] = {
                    "users": len(many),
                    "memories": target.many_rows,
                    "cold": stats(cold[target.name]),
                    "warm": stats(warm[target.name]),
                    "rss_growth_bytes": growth,
                    "bytes_per_cached_memory": growth / max(target.many_rows, 1),
                }
    finally:
        for target in targets:
            target.stop()
    report["load_after"] = os.getloadavg()
    report.update(targets[0].report)
    if len(targets) > 1:
        base = targets[1]
        report["baseline"] = {"tree": str(base.tree) if base.tree else None, "env": base.env, **base.report}
        report["ratios"] = {
            size: {
                f"{what}_{q}": r[what][f"{q}_ms"] / base.report["sizes"][size][what][f"{q}_ms"]
                for what in ("add", "search_after_write", "search")
                for q in ("p50", "p95")
            }
            for size, r in report["sizes"].items()
        }

    for target in targets:
        if len(targets) > 1:
            print(
                f"\n{target.name}"
                + (f" ({target.tree or ''} {target.env or ''})" if target.name != "current" else "")
            )
        rows = []
        for r in target.report["sizes"].values():
            rows.append(
                [
                    r["memories"],
                    f"{r['add']['p50_ms']:.0f} / {r['add']['p95_ms']:.0f}",
                    f"{r['search_after_write']['p50_ms']:.0f} / {r['search_after_write']['p95_ms']:.0f}",
                    f"{r['search']['p50_ms']:.0f} / {r['search']['p95_ms']:.0f}",
                    f"{r['search_after_write']['p95_ms'] / r['search']['p95_ms']:.2f}",
                ]
            )
        print_table(
            [
                "memories",
                "add (wait) p50/p95 ms",
                "search after write p50/p95",
                "search p50/p95",
                "p95 ratio",
            ],
            rows,
        )
        if "many_users" in target.report:
            m = target.report["many_users"]
            print()
            print_table(
                ["users", "memories", "cold p50/p95 ms", "warm p50/p95 ms", "bytes per cached memory"],
                [
                    [
                        m["users"],
                        m["memories"],
                        f"{m['cold']['p50_ms']:.0f} / {m['cold']['p95_ms']:.0f}",
                        f"{m['warm']['p50_ms']:.0f} / {m['warm']['p95_ms']:.0f}",
                        f"{m['bytes_per_cached_memory']:.0f}",
                    ]
                ],
            )
    if "ratios" in report:
        print("\ncurrent / baseline")
        print_table(
            ["memories", "add p50", "add p95", "search after write p95", "search p95"],
            [
                [
                    report["sizes"][size]["memories"],
                    f"{r['add_p50']:.2f}",
                    f"{r['add_p95']:.2f}",
                    f"{r['search_after_write_p95']:.2f}",
                    f"{r['search_p95']:.2f}",
                ]
                for size, r in report["ratios"].items()
            ],
        )
    print(f"load average before / after: {report['load_before']} / {report['load_after']}")
    print(f"wrote {write_json('agent_loop', report, args.json)}")


if __name__ == "__main__":
    main()
