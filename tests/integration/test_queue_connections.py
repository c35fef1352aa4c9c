"""A queue holds few idle connections: every worker process has one, and PostgreSQL allows ~100."""

from __future__ import annotations

from memsvc.database import libpq_url


def _connections(sql) -> int:  # type: ignore[no-untyped-def]
    row = sql.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()").fetchone()
    return int(row[0])


def test_a_queue_opens_one_connection_for_deferring(service, database, sql) -> None:  # type: ignore[no-untyped-def]
    from memsvc.workers.queue import ProcrastinateQueue

    before = _connections(sql)
    queue = ProcrastinateQueue(service, libpq_url(database.url), worker="none")
    try:
        # psycopg_pool's default would hold 4 open from the start.
        assert _connections(sql) - before <= 1
    finally:
        queue.close()
