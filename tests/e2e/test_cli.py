"""The CLI as a person runs it, against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from memsvc.models import Memory


def _memsvc(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMSVC_DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "memsvc.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_keys_create_prints_a_working_key(database_url: str, service) -> None:  # type: ignore[no-untyped-def]
    done = _memsvc(database_url, "keys", "create", "--tenant", "cli-tenant")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("msk_")
    assert service.authenticate(key).tenant_id


def test_import_jsonl_with_progress_and_idempotence(database_url: str, database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines = [
        {
            "role": "user",
            "name": "Ann",
            "id": "j1",
            "content": "I started a pottery class.",
            "session_id": "s1",
            "created_at": "2024-02-01T10:00:00Z",
        },
        {
            "role": "user",
            "name": "Bob",
            "id": "j2",
            "content": "Nice! I went to Rome last week.",
            "session_id": "s1",
            "created_at": "2024-02-01T10:01:00Z",
        },
        {
            "role": "user",
            "name": "Ann",
            "id": "j3",
            "content": "My cat Miso is sick.",
            "session_id": "s2",
            "created_at": "2024-02-08T09:00:00Z",
        },
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    first = _memsvc(database_url, "import", str(path), "--user-id", "importer", "--tenant", "cli-import")
    assert first.returncode == 0, first.stderr
    assert "3 msg" in first.stderr or "3/3" in first.stderr  # the progress bar
    assert "0 messages already stored" in first.stdout
    with database.session() as session:
        turns = session.execute(
            select(func.count())
            .select_from(Memory)
            .where(Memory.user_id == "importer", Memory.kind == "turn")
        ).scalar_one()
    assert turns == 3
    again = _memsvc(database_url, "import", str(path), "--user-id", "importer", "--tenant", "cli-import")
    assert again.returncode == 0 and "0 memories made, 3 messages already stored" in again.stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"role": "user"}\n')
    failed = _memsvc(database_url, "import", str(bad), "--tenant", "cli-import")
    assert failed.returncode == 2 and "line 1" in failed.stderr

    missing = _memsvc(database_url, "import", str(tmp_path / "no-such.jsonl"), "--tenant", "cli-import")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "cannot read" in missing.stderr and "no-such.jsonl" in missing.stderr
