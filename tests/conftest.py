"""Fixtures shared by every test: one embedded PostgreSQL per test session, a fresh database in it,
the real embedding model, and a tenant per test so tests never see each other's data."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import psycopg

# The fixtures import the service lazily, so GPU-only test files run where only torch is installed.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def pg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("memsvc-data")


@pytest.fixture(scope="session")
def settings(pg_dir: Path):  # type: ignore[no-untyped-def]
    from memsvc.config import Settings

    return Settings(data_dir=pg_dir, database_url=None)


@pytest.fixture(scope="session")
def database_url(settings) -> str:  # type: ignore[no-untyped-def]
    from memsvc import migrate
    from memsvc.database import start_embedded_postgres

    url = start_embedded_postgres(settings.data_dir, f"memsvc_test_{os.getpid()}")
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def database(database_url: str):  # type: ignore[no-untyped-def]
    from memsvc.database import Database

    db = Database(database_url, pool_size=5)
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def sql(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A raw autocommit connection for checking what is really in the tables."""
    import psycopg

    from memsvc.database import libpq_url

    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn


@pytest.fixture
def empty_database_url(database_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of the test's own on the session's server, empty (migrations from scratch);
    dropped after the test."""
    import psycopg
    from sqlalchemy.engine import make_url

    from memsvc.database import libpq_url

    name = f"memsvc_{request.node.name}"[:63].lower()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    from memsvc.embedding import get_embedder

    return get_embedder(device="cpu", threads=1)


@pytest.fixture(scope="session")
def service(settings, database, embedder):  # type: ignore[no-untyped-def]
    from memsvc.service import MemoryService

    return MemoryService(settings, database, embedder=embedder)


@pytest.fixture
def tenant(database):  # type: ignore[no-untyped-def]
    """A brand-new tenant and one API key for it: (TenantContext, key)."""
    from memsvc.tenants import authenticate, create_api_key

    with database.session() as session:
        key = create_api_key(session, f"t-{uuid.uuid4().hex[:12]}")
    with database.session() as session:
        return authenticate(session, key), key


@pytest.fixture(scope="session")
def live_server(service, database) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The real app on a real port, with the in-process queue worker, as `memsvc serve` runs it."""
    import uvicorn

    from memsvc.api import create_app
    from memsvc.database import libpq_url
    from memsvc.workers.queue import ProcrastinateQueue

    queue = ProcrastinateQueue(service, libpq_url(database.url))
    server = uvicorn.Server(
        uvicorn.Config(create_app(service, queue), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def client(live_server: str, tenant):  # type: ignore[no-untyped-def]
    from memsvc.client import MemoryClient

    with MemoryClient(live_server, tenant[1]) as c:
        yield c
