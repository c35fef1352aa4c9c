"""`memsvc import` on files with mistakes in them: a one-line error per problem and exit 2, and
nothing stored unless the mistake is only found while storing (then it says how far it got)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from memsvc.models import Memory

FINE = {"role": "user", "content": "I started a pottery class.", "session_id": "s1"}


def _import(database_url: str, path: Path, user_id: str, **env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMSVC_DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "memsvc.cli",
            "import",
            str(path),
            "--user-id",
            user_id,
            "--tenant",
            "cli-imp",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _turns(database, user_id: str) -> int:  # type: ignore[no-untyped-def]
    with database.session() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(Memory)
                .where(Memory.user_id == user_id, Memory.kind == "turn")
            ).scalar_one()
        )


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("array.json", json.dumps([FINE]), "array.json is a JSON array"),
        ("number.jsonl", json.dumps(FINE) + "\n5\n", "number.jsonl, line 2: a message is one JSON object"),
        (
            "session.jsonl",
            json.dumps(FINE) + "\n" + json.dumps({**FINE, "session_id": 5}) + "\n",
            "session.jsonl, line 2: session_id: Input should be a valid string",
        ),
        (
            "empty-content.jsonl",
            json.dumps(FINE) + "\n" + json.dumps({**FINE, "content": "", "session_id": "s2"}) + "\n",
            "empty-content.jsonl, line 2: content: String should have at least 1 character",
        ),
        (
            "locomo.json",
            json.dumps(
                {
                    "session_1_date_time": "1:56 pm on 8 May, 2023",
                    "session_1": [{"speaker": "A", "dia_id": "D1:1", "text": "hi"}],
                    "session_2": [{"speaker": "B", "dia_id": "D2:1", "text": "hello"}],
                }
            ),
            "locomo.json: session_2_date_time: missing",
        ),
        ("empty.jsonl", "\n", "empty.jsonl holds no messages: nothing imported"),
    ],
)
def test_a_file_with_a_mistake_is_named_and_nothing_is_stored(  # type: ignore[no-untyped-def]
    database_url: str, database, tmp_path: Path, name: str, text: str, says: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    user_id = f"mistake-{name}"
    done = _import(database_url, path, user_id)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"memsvc: {path}" in done.stderr and says in done.stderr, done.stderr
    assert _turns(database, user_id) == 0


@pytest.mark.parametrize("user_id", ["", " "])
def test_a_blank_user_id_is_refused(database_url: str, tmp_path: Path, user_id: str) -> None:
    # "" quietly became the file's name.
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(FINE) + "\n")
    done = _import(database_url, path, user_id)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"argument --user-id: a name with something printable in it, not {user_id!r}" in done.stderr


def test_a_message_over_the_limit_late_in_the_file_stores_nothing(  # type: ignore[no-untyped-def]
    database_url: str, database, tmp_path: Path
) -> None:
    """The service refused it only when its batch came, after the batches before it were stored."""
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(FINE) + "\n" + json.dumps({**FINE, "content": "x" * 41, "session_id": "s2"}))
    done = _import(database_url, path, "too-long", MEMSVC_MAX_CONTENT_CHARS="40")
    assert done.returncode == 2, done.stderr
    assert f"{path}, line 2: content: 41 characters; the limit is 40" in done.stderr
    assert _turns(database, "too-long") == 0


def test_a_batch_refused_while_storing_says_how_many_were_imported(  # type: ignore[no-untyped-def]
    database_url: str, database, tmp_path: Path
) -> None:
    """Batches are stored one by one, each whole or not at all: the earlier ones stay, and the
    error says so; once fixed, the import again stores only the rest."""
    lines = [{**FINE, "content": f"message {i}", "session_id": "s1" if i < 2 else "s2"} for i in range(5)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = _import(database_url, path, "half", MEMSVC_MAX_MESSAGES_PER_REQUEST="2")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"{path}: stopped at message 3 of 5: at most 2 messages per request" in done.stderr
    assert "the 2 before it were imported, the rest not" in done.stderr
    assert _turns(database, "half") == 2
    again = _import(database_url, path, "half")
    assert again.returncode == 0, again.stderr
    assert "3 messages stored, 2 already stored" in again.stdout
    assert _turns(database, "half") == 5
