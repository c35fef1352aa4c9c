"""Where the time of one add (`wait: true`) goes, stage by stage, read from PostgreSQL's own log.

Starts `memsvc serve` on a fresh embedded database, gives one user ~1k memories (as
bench/agent_loop.py does), turns on `log_min_duration_statement = 0` with millisecond timestamps,
then runs `--adds` adds of one message (each followed by a search, as an agent's loop does). Every
statement of every process (API, worker) is lined up against the client's send and receive time,
and the stages are the end of:

- `job row`: the `jobs` row committed (auth, backlog count, insert);
- `deferred`: procrastinate's job committed;
- `fetched`: the worker took it (procrastinate wakes it by LISTEN/NOTIFY);
- `running`: the job marked running;
- `committed`: the ingest transaction committed (the result is stored);
- `answered`: the response received; `answered - committed` is how late the waiting request
  learned of the commit.

    python bench/add_stages.py [--adds 40] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench._common import LOCOMO_DIR, machine, percentile, print_table, write_json
from bench.agent_loop import SEED, fill, start_server, wait_ready

# "2026-12-01 23:42:18.732 UTC 1234 LOG:  duration: 0.123 ms  statement: ..."
LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC (\d+) LOG:  duration: ([\d.]+) ms  (.*)$"
)
STAGES: list[tuple[str, str, bool]] = [  # name, what the statement contains, then its COMMIT
    ("job row", "INSERT INTO jobs", True),
    ("deferred", "procrastinate_defer_jobs", True),
    ("fetched", "procrastinate_fetch_job", False),
    ("running", "updated_at=now() WHERE jobs.id = $2::UUID AND jobs.status IN", True),
    ("committed", "UPDATE jobs SET status=$1::VARCHAR, result", True),
]


def read_log(path: Path) -> list[tuple[float, str]]:
    """(end time, text) of every logged statement."""
    entries: list[tuple[float, str]] = []
    for line in path.read_text(errors="replace").splitlines():
        m = LOG_LINE.match(line)
        if m:
            at = datetime.strptime(m.group(1) + "+0000", "%Y-%m-%d %H:%M:%S.%f%z").timestamp()
            entries.append((at, m.group(4)))
        elif entries and line.startswith(("\t", " ")):  # a statement's next line
            entries[-1] = (entries[-1][0], f"{entries[-1][1]} {line.strip()}")
    return entries


def stages_of(sent: float, received: float, log: list[tuple[float, str]]) -> dict[str, float]:
    """Each stage's end in ms after the request was sent (NaN if not found)."""
    mine = [(at, text) for at, text in log if sent - 0.001 <= at <= received + 0.001]
    out: dict[str, float] = {}
    after = sent
    for name, marker, then_commit in STAGES:
        hit = next(((at, i) for i, (at, text) in enumerate(mine) if at >= after and marker in text), None)
        if hit is None:
            out[name] = float("nan")
            continue
        at, i = hit
        if then_commit:
            at = next((a for a, text in mine[i:] if text.startswith("statement: COMMIT")), at)
        out[name] = (at - sent) * 1000
        after = hit[0]
    out["answered"] = (received - sent) * 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--adds", type=int, default=40, help="at most the 300-odd lines of conv-30")
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--json")
    args = parser.parse_args()

    import psycopg

    from memsvc.database import libpq_url, start_embedded_postgres
    from memsvc.importers import locomo_batches

    data_dir = Path(tempfile.mkdtemp(prefix="memsvc-stages-"))
    server = start_server(data_dir, args.port)
    spans: list[tuple[float, float, dict[str, float]]] = []
    try:
        key = wait_ready(f"http://127.0.0.1:{args.port}", data_dir, server)
        http = httpx.Client(
            base_url=f"http://127.0.0.1:{args.port}", headers={"Authorization": f"Bearer {key}"}, timeout=600
        )
        conversation = json.loads((LOCOMO_DIR / "conv-26.json").read_text())
        # Lines of another conversation, each once: a line the worker has seen is in its
        # embedder's cache and would be timed without its encoding.
        other = json.loads((LOCOMO_DIR / "conv-30.json").read_text())
        lines = list(dict.fromkeys(m.content for b in locomo_batches(other, "x") for m in b.messages))
        for batch in list(locomo_batches(conversation, SEED))[:6]:
            http.post("/v1/memories", json={**batch.model_dump(mode="json"), "wait": True}).raise_for_status()
        url = libpq_url(start_embedded_postgres(data_dir))
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT tenant_id, count(*) FROM memories WHERE user_id = %s GROUP BY tenant_id", (SEED,)
            ).fetchone()
            assert row is not None
            fill(conn, row[0], "user", max(1, round(1000 / row[1])))
            conn.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
            conn.execute("ALTER SYSTEM SET log_line_prefix = '%m %p '")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(1)
        http.post("/v1/search", json={"query": "warm up", "user_id": "user"}).raise_for_status()
        for i in range(args.adds):
            message = {"role": "user", "name": "Caroline", "content": lines[i], "id": f"s-{i}"}
            body = {"user_id": "user", "session_id": "stages", "wait": True, "messages": [message]}
            sent = time.time()
            response = http.post("/v1/memories", json=body)
            received = time.time()
            response.raise_for_status()
            spans.append((sent, received, (response.json().get("result") or {}).get("timings_ms", {})))
            http.post("/v1/search", json={"query": "what did Caroline do", "user_id": "user", "limit": 10})
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET log_min_duration_statement")
            conn.execute("SELECT pg_reload_conf()")
    finally:
        server.terminate()
        server.wait(timeout=60)

    log = read_log(data_dir / "pg" / "log")
    per_add = [stages_of(sent, received, log) for sent, received, _ in spans]
    names = [name for name, _, _ in STAGES] + ["answered"]
    report: dict[str, Any] = {"machine": machine(), "adds": len(per_add), "stages_end_ms": {}}
    rows = []
    for name in names:
        values = [s[name] for s in per_add if s[name] == s[name]]
        report["stages_end_ms"][name] = {"p50": percentile(values, 50), "p95": percentile(values, 95)}
        rows.append([name, f"{percentile(values, 50):.1f}", f"{percentile(values, 95):.1f}"])
    lag = [s["answered"] - s["committed"] for s in per_add if s["committed"] == s["committed"]]
    report["answered_after_commit_ms"] = {"p50": percentile(lag, 50), "p95": percentile(lag, 95)}
    rows.append(["answered - committed", f"{percentile(lag, 50):.1f}", f"{percentile(lag, 95):.1f}"])
    for part in ("database", "embedding", "extraction"):
        values = [t.get(part, 0.0) for _, _, t in spans]
        rows.append(
            [f"(ingest's own {part})", f"{percentile(values, 50):.1f}", f"{percentile(values, 95):.1f}"]
        )
    report["per_add"] = per_add
    print_table(["stage end, ms after the request was sent", "p50", "p95"], rows)
    print(f"wrote {write_json('add_stages', report, args.json)}")


if __name__ == "__main__":
    main()
