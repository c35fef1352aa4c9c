"""A real `memsvc worker` process killed mid-job leaves nothing of the batch; a second worker on
the same machine retries the job at once (the dead process's heartbeat has not timed out: the stall
timeout here is 10 minutes) and completes it, with exactly what an uninterrupted ingest makes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from memsvc.database import libpq_url
from memsvc.importers import locomo_batches
from memsvc.models import Entity, Job, Memory, Relation
from memsvc.schemas import AddRequest
from memsvc.workers.queue import ProcrastinateQueue

LOCOMO = Path(__file__).resolve().parents[3] / "shared" / "data" / "locomo" / "conv-26.json"


def _one_big_batch(user_id: str) -> AddRequest:
    batches = list(locomo_batches(json.loads(LOCOMO.read_text()), user_id))
    messages = [m for b in batches for m in b.messages]  # the whole conversation: ingest is quick now
    return AddRequest(messages=messages, user_id=user_id, session_id="all")


def _counts(database, tenant_id: uuid.UUID, user_id: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with database.session() as session:
        kinds = dict(
            session.execute(
                select(Memory.kind, func.count())
                .where(Memory.tenant_id == tenant_id, Memory.user_id == user_id)
                .group_by(Memory.kind)
            ).all()
        )
        for model, name in ((Entity, "entities"), (Relation, "relations")):
            kinds[name] = session.execute(
                select(func.count())
                .select_from(model)
                .where(model.tenant_id == tenant_id, model.user_id == user_id)
            ).scalar_one()
    return kinds


def _job_status(database, job_id: uuid.UUID) -> str:  # type: ignore[no-untyped-def]
    with database.session() as session:
        return session.execute(select(Job.status).where(Job.id == job_id)).scalar_one()


def _start_worker(database_url: str, tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MEMSVC_DATABASE_URL": database_url,
        "MEMSVC_WORKER_HEARTBEAT_S": "0.5",
        # Only the dead process can say the job needs a retry: its heartbeat would take this long.
        "MEMSVC_WORKER_STALLED_AFTER_S": "600",
        "HF_HUB_OFFLINE": "1",
    }
    log = (tmp_path / f"{name}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "memsvc.cli", "worker"], env=env, stdout=log, stderr=log)


@pytest.mark.slow
@pytest.mark.skipif(not LOCOMO.exists(), reason="needs shared/data/locomo")
def test_killed_worker_leaves_nothing_and_the_retry_completes(
    service, database, database_url, tenant, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    expected_request = _one_big_batch("reference")
    service.run_ingest_job(service.submit_ingest(ctx, expected_request))
    expected = _counts(database, ctx.tenant_id, "reference")
    assert expected["turn"] > 200 and expected["fact"] > 0 and expected["entities"] > 0

    queue = ProcrastinateQueue(service, libpq_url(database_url), worker="none")
    job_id = service.submit_ingest(ctx, _one_big_batch("crash"))
    queue.defer_ingest(job_id)

    first = _start_worker(database_url, tmp_path, "worker-1")
    try:
        deadline = time.monotonic() + 120
        while _job_status(database, job_id) != "running":
            assert first.poll() is None, (tmp_path / "worker-1.log").read_text()
            assert time.monotonic() < deadline, "worker never started the job"
            time.sleep(0.01)
        time.sleep(0.1)  # well inside the job: a few hundred turns take longer
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()

    assert _job_status(database, job_id) == "running"  # it died mid-job
    assert _counts(database, ctx.tenant_id, "crash") == {
        "entities": 0,
        "relations": 0,
    }  # nothing half-written

    # Done within the deadline below only if a worker of this machine saw the process gone (the
    # second one, or one the suite runs in this process): its heartbeat would take 600 s.
    second = _start_worker(database_url, tmp_path, "worker-2")
    try:
        deadline = time.monotonic() + 180
        while _job_status(database, job_id) != "succeeded":
            assert second.poll() is None, (tmp_path / "worker-2.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "worker-2.log").read_text()[-3000:]
            time.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=15)
        except subprocess.TimeoutExpired:
            second.kill()
    queue.close()

    assert _counts(database, ctx.tenant_id, "crash") == expected
