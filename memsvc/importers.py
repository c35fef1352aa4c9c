"""Readers for conversation files `memsvc import` and the benchmarks take.

- LoCoMo (`conv-*.json`): each session becomes one batch, each turn one message whose id is
  its `dia_id`, timed at the session's start plus one second per turn (to keep order); a shared
  photo's caption is kept in the text as " [photo: …]".
- BEAM (`chat.json`, a list of batches of user–assistant turns): each batch becomes one batch (session
  `batch_<n>`), each message one message whose id is its BEAM `id`, timed at the batch's date (the
  `time_anchor` of its first message, e.g. `March-15-2024`) plus one second per message.
- JSONL: one message per line, `{"role", "content", "name"?, "id"?, "created_at"?, "session_id"?}`,
  batched by session in file order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from memsvc.errors import InvalidInput
from memsvc.schemas import AddRequest, Message

LOCOMO_TIME = "%I:%M %p on %d %B, %Y"
BEAM_TIME = "%B-%d-%Y"
JSONL_BATCH = 200


def parse_locomo_time(text: str) -> datetime:
    return datetime.strptime(text.strip(), LOCOMO_TIME).replace(tzinfo=UTC)


def locomo_batches(data: dict[str, Any], user_id: str) -> Iterator[AddRequest]:
    """One `AddRequest` per LoCoMo session, in session order."""
    conversation = data.get("conversation", data)
    numbers = sorted(int(m.group(1)) for key in conversation if (m := re.fullmatch(r"session_(\d+)", key)))
    for n in numbers:
        turns = conversation[f"session_{n}"]
        start = parse_locomo_time(conversation[f"session_{n}_date_time"])
        messages = []
        for i, turn in enumerate(turns):
            text = turn["text"]
            if turn.get("blip_caption"):
                text = f"{text} [photo: {turn['blip_caption']}]"
            messages.append(
                Message(
                    role="user",
                    name=turn["speaker"],
                    content=text,
                    id=turn["dia_id"],
                    created_at=start + timedelta(seconds=i),
                )
            )
        if messages:
            yield AddRequest(messages=messages, user_id=user_id, session_id=f"session_{n}")


def beam_batches(batches: list[dict[str, Any]], user_id: str) -> Iterator[AddRequest]:
    """One `AddRequest` per BEAM batch (a session of the chat), in batch order."""
    previous: datetime | None = None
    for batch in sorted(batches, key=lambda b: int(b["batch_number"])):
        chat = [m for group in batch["turns"] for m in group]
        anchors = [m["time_anchor"] for m in chat if m.get("time_anchor")]
        anchor = batch.get("time_anchor") or (anchors[0] if anchors else None)
        # A batch without a date follows the one before it (a day later), never precedes it.
        if anchor:
            start = datetime.strptime(anchor, BEAM_TIME).replace(tzinfo=UTC)
        elif previous is not None:
            start = previous + timedelta(days=1)
        else:
            start = datetime(2024, 1, 1, tzinfo=UTC)
        previous = start
        messages = [
            Message(
                role=m["role"], content=m["content"], id=str(m["id"]), created_at=start + timedelta(seconds=i)
            )
            for i, m in enumerate(chat)
            if m["content"].strip()
        ]
        if messages:
            yield AddRequest(messages=messages, user_id=user_id, session_id=f"batch_{batch['batch_number']}")


def jsonl_batches(lines: Iterator[str], user_id: str) -> Iterator[AddRequest]:
    session: str | None = None
    batch: list[Message] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            line_session = record.pop("session_id", None)
            message = Message.model_validate(record)
        except ValueError as exc:
            raise InvalidInput(f"line {number}: {exc}") from exc
        if batch and (line_session != session or len(batch) >= JSONL_BATCH):
            yield AddRequest(messages=batch, user_id=user_id, session_id=session)
            batch = []
        session = line_session
        batch.append(message)
    if batch:
        yield AddRequest(messages=batch, user_id=user_id, session_id=session)


def read_batches(path: Path, user_id: str) -> list[AddRequest]:
    """Every batch in a LoCoMo JSON or a JSONL file (by content, not by name)."""
    # UTF-8 whatever the locale, a byte-order mark (as Windows tools write one) skipped.
    text = path.read_text(encoding="utf-8-sig")
    # Lines end at "\n" only: `splitlines` would also cut at U+2028, U+0085 and the like, which
    # JSON strings may hold unescaped (json.dumps(..., ensure_ascii=False) writes them so).
    lines = text.split("\n")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return list(jsonl_batches(iter(lines), user_id))
    try:
        data = json.loads(text)
    except ValueError:
        data = None  # not one JSON document: JSONL
    if isinstance(data, dict) and "role" not in data:
        if "conversation" in data or any(k.startswith("session_") for k in data):
            return list(locomo_batches(data, user_id))
        raise InvalidInput(f"{path} is JSON but not a LoCoMo conversation")
    return list(jsonl_batches(iter(lines), user_id))
