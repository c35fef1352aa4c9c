"""POST /v1/consolidate through HTTP and the queue, the SDK's consolidate(), the history it leaves
and restoring an archived memory."""

from __future__ import annotations

import time
import uuid

import pytest

from memsvc.client import MemoryClient


def _wait(client: MemoryClient, job_id: object, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.job(job_id)  # type: ignore[arg-type]
        if job.status in ("succeeded", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def test_consolidate_job_through_the_queue(client: MemoryClient) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    # Near duplicates: said word for word, a fact would be one memory at ingest already.
    said = {
        "s1": "I love hiking in the mountains with my sister.",
        "s2": "I really love hiking in the mountains with my sister.",
    }
    for day, session in ((1, "s1"), (2, "s2")):
        client.add(
            [
                {
                    "role": "user",
                    "name": "Ann",
                    "id": f"{session}-0",
                    "created_at": f"2024-01-0{day}T10:00:00Z",
                    "content": said[session],
                },
            ],
            user,
            session_id=session,
            wait=True,
        )
    queued = client.consolidate(user)
    assert queued.status == "queued" and queued.kind == "consolidate"
    assert queued.created_at is not None and queued.updated_at is not None  # the whole job, as GET has it
    job = _wait(client, queued.job_id)
    assert job.status == "succeeded", job.error
    assert job.result is not None and job.result["totals"]["merged"] == 1
    facts = client.list(user, type="semantic").items
    archived = next(m for m in facts if m.status == "archived")
    events = client.history(archived.id)
    assert events[-1].op == "merge" and events[-1].run_id == queued.job_id
    assert events[-1].actor == f"job:{queued.job_id}"
    restored = client._request("POST", f"/v1/memories/{archived.id}/restore").json()
    assert restored["status"] == "active"
    assert client.history(archived.id)[-1].op == "restore"


def test_consolidate_without_a_user_covers_the_tenant(client: MemoryClient) -> None:
    job = _wait(client, client.consolidate().job_id)
    assert job.status == "succeeded", job.error


def test_a_consolidate_request_without_a_body_covers_the_tenant(client: MemoryClient) -> None:
    response = client._http.post("/v1/consolidate")  # no body at all, as `curl -X POST` sends
    assert response.status_code == 202, response.text
    job = _wait(client, response.json()["job_id"])
    assert job.status == "succeeded" and job.kind == "consolidate", job.error


def test_the_queued_answer_names_the_user_it_was_asked_for(client: MemoryClient) -> None:
    for user in ("ann", "bob"):
        assert client.add([{"role": "user", "content": "I live in Porto."}], user, wait=True).result
    response = client._http.post("/v1/consolidate", json={"user_id": "ann"})
    assert response.status_code == 202, response.text
    assert response.json()["user_id"] == "ann"
    assert client.consolidate("bob").user_id == "bob"
    assert client.consolidate().user_id is None  # the tenant's run names no user


def test_a_user_with_no_memories_is_404_not_a_run_that_did_nothing(client: MemoryClient) -> None:
    from memsvc.client import NotFoundError

    response = client._http.post("/v1/consolidate", json={"user_id": "no-such-user"})
    assert response.status_code == 404 and "no memories of user 'no-such-user'" in response.text
    with pytest.raises(NotFoundError):
        client.consolidate("no-such-user")
