"""What a NOTIFY inside a writing transaction costs concurrent writers.

PostgreSQL commits transactions that issued a NOTIFY one at a time (a global lock held through the
commit). This measures commits per second of W concurrent writers, each inserting rows into a table
whose row trigger appends to a feed table, with and without `pg_notify` in that trigger: the shape
of memsvc's change feed before and after migration 0007. Runs on a new embedded PostgreSQL.

    python bench/commit_notify.py [--writers 8] [--transactions 60] [--rows 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench._common import machine, print_table, write_json

FEED = "INSERT INTO feed (row_id) VALUES (NEW.id);"
TRIGGERS = {"feed only (now)": FEED, "feed + pg_notify (before 0007)": FEED + " PERFORM pg_notify('ch', '');"}


def commits_per_s(url: str, body: str, writers: int, transactions: int, rows: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE OR REPLACE FUNCTION log_row() RETURNS trigger"
            f" AS $$ BEGIN {body} RETURN NULL; END $$ LANGUAGE plpgsql"
        )

    def write() -> None:
        with psycopg.connect(url) as conn:
            for _ in range(transactions):
                with conn.transaction():
                    conn.execute("INSERT INTO t (v) SELECT 'x' FROM generate_series(1, %s)", (rows,))

    threads = [threading.Thread(target=write) for _ in range(writers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return writers * transactions / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--transactions", type=int, default=60, help="per writer")
    parser.add_argument("--rows", type=int, default=50, help="per transaction")
    parser.add_argument("--rounds", type=int, default=2, help="each variant this often, interleaved")
    parser.add_argument("--json")
    args = parser.parse_args()

    from memsvc.database import libpq_url, start_embedded_postgres

    url = libpq_url(start_embedded_postgres(Path(tempfile.mkdtemp(prefix="memsvc-bench-notify-")), "notify"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v text)")
        conn.execute("CREATE TABLE feed (seq bigserial PRIMARY KEY, row_id bigint)")
        conn.execute(
            "CREATE FUNCTION log_row() RETURNS trigger AS $$ BEGIN RETURN NULL; END $$ LANGUAGE plpgsql"
        )
        conn.execute("CREATE TRIGGER t_log AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION log_row()")
    results: dict[str, list[float]] = {name: [] for name in TRIGGERS}
    for _ in range(args.rounds):
        for name, body in TRIGGERS.items():
            results[name].append(commits_per_s(url, body, args.writers, args.transactions, args.rows))
    print(f"{args.writers} writers x {args.transactions} transactions of {args.rows} rows")
    print_table(
        ["trigger", "commits/s (each round)", "best"],
        [[name, ", ".join(f"{r:.0f}" for r in rates), max(rates)] for name, rates in results.items()],
    )
    report: dict[str, Any] = {"machine": machine(), "args": vars(args), "commits_per_s": results}
    print(f"\nwrote {write_json('commit_notify', report, args.json)}")


if __name__ == "__main__":
    main()
