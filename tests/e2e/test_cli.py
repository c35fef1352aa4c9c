"""The CLI as a person runs it, against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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
    assert "3 messages stored, 0 already stored; made: " in first.stdout and "turn 3" in first.stdout
    with database.session() as session:
        turns = session.execute(
            select(func.count())
            .select_from(Memory)
            .where(Memory.user_id == "importer", Memory.kind == "turn")
        ).scalar_one()
    assert turns == 3
    again = _memsvc(database_url, "import", str(path), "--user-id", "importer", "--tenant", "cli-import")
    assert again.returncode == 0 and "0 messages stored, 3 already stored; made: nothing" in again.stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"role": "user"}\n')
    failed = _memsvc(database_url, "import", str(bad), "--tenant", "cli-import")
    assert failed.returncode == 2 and "line 1" in failed.stderr

    missing = _memsvc(database_url, "import", str(tmp_path / "no-such.jsonl"), "--tenant", "cli-import")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "cannot read" in missing.stderr and "no-such.jsonl" in missing.stderr


def test_import_keeps_any_unicode_a_json_line_may_hold(database_url: str, database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A JSONL file as `json.dumps(..., ensure_ascii=False)` writes it (U+2028, U+0085 and emoji
    unescaped), behind a byte-order mark: every message comes back as written, timed as sent."""
    lines = [
        {
            "role": "user",
            "name": "Zoë",
            "id": "u1",
            "session_id": "s/ü",
            "created_at": "2024-02-29T23:59:59+01:00",
            "content": "Line one\u2028line two\u2029, a café in Kraków 🎉",
        },
        {
            "role": "assistant",
            "id": "u2",
            "session_id": "s/ü",
            "created_at": "2024-03-01T00:00:30+01:00",
            "content": "next\x85line \x0c\x1c and 🙂",
        },
    ]
    path = tmp_path / "unicode.jsonl"
    path.write_text("\r\n".join(json.dumps(line, ensure_ascii=False) for line in lines), encoding="utf-8-sig")
    done = _memsvc(database_url, "import", str(path), "--user-id", "unicode", "--tenant", "cli-import")
    assert done.returncode == 0, done.stderr
    with database.session() as session:
        turns = session.execute(
            select(Memory).where(Memory.user_id == "unicode", Memory.kind == "turn").order_by(Memory.event_at)
        ).scalars()
        stored = [(t.content, t.speaker, t.role, t.session_id, t.event_at.isoformat()) for t in turns]
    assert stored == [
        (lines[0]["content"], "Zoë", "user", "s/ü", "2024-02-29T22:59:59+00:00"),
        (lines[1]["content"], "assistant", "assistant", "s/ü", "2024-02-29T23:00:30+00:00"),
    ]


def test_consolidate_names_a_user_with_no_memories_and_fails(database_url: str, tmp_path: Path) -> None:
    """A mistyped `--user` was "consolidated" (1 user, 0 memories before and after) with exit 0."""
    path = tmp_path / "kim.jsonl"
    path.write_text(
        json.dumps({"role": "user", "name": "Kim", "id": "k1", "content": "I live in Oslo."}) + "\n"
    )
    imported = _memsvc(database_url, "import", str(path), "--user-id", "kim", "--tenant", "cli-consolidate")
    assert imported.returncode == 0, imported.stderr
    typo = _memsvc(database_url, "consolidate", "--tenant", "cli-consolidate", "--user", "kin", "--dry-run")
    assert typo.returncode == 2
    assert "no memories of user 'kin' in tenant 'cli-consolidate'" in typo.stderr
    assert "consolidation run" not in typo.stdout
    backfill = _memsvc(database_url, "backfill-passages", "--tenant", "cli-consolidate", "--user", "kin")
    assert backfill.returncode == 2 and "no memories of user 'kin'" in backfill.stderr  # exited 0
    done = _memsvc(database_url, "consolidate", "--tenant", "cli-consolidate", "--user", "kim", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "memories before" in done.stdout


def test_counts_below_one_are_refused_before_any_work(database_url: str) -> None:
    """`--batch-size 0` read no batch, stored nothing and exited 0 saying how many messages it saw."""
    for args in (("backfill-passages", "--batch-size", "0"), ("worker", "--concurrency", "-1")):
        done = _memsvc(database_url, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "must be at least 1" in done.stderr


def test_every_option_of_every_command_says_what_it_does() -> None:
    from argparse import _HelpAction, _SubParsersAction

    from memsvc.cli import build_parser

    parsers, silent = [build_parser()], []
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, _SubParsersAction):
                parsers.extend(action.choices.values())
            elif not isinstance(action, _HelpAction) and action.help is None and action.option_strings:
                silent.append(f"{parser.prog} {action.option_strings[-1]}")
    assert not silent, silent


@pytest.mark.parametrize("command", [("serve",), ("mcp", "--transport", "http")])
@pytest.mark.parametrize("port", ["99999", "0", "http"])
def test_a_port_out_of_range_is_a_usage_error(database_url: str, command: tuple[str, ...], port: str) -> None:
    done = _memsvc(database_url, *command, "--port", port)
    assert done.returncode == 2 and "argument --port" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_version(database_url: str) -> None:
    from memsvc import __version__

    done = _memsvc(database_url, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"memsvc {__version__}"
