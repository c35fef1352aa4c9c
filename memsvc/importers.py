"""Readers for conversation files: `memsvc import` takes LoCoMo and JSONL, the benchmarks also BEAM.

- LoCoMo (`conv-*.json`): each session becomes one batch, each turn one message whose id is
  its `dia_id`, timed at the session's start plus one second per turn (to keep order); a shared
  photo's caption is kept in the text as " [photo: …]".
- BEAM (`chat.json`, a list of batches of user–assistant turns): each batch becomes one batch (session
  `batch_<n>`), each message one message whose id is its BEAM `id`, timed at the batch's date (the
  `time_anchor` of its first message, e.g. `March-15-2024`) plus one second per message.
- JSONL: one message per line, `{"role", "content", "name"?, "id"?, "created_at"?, "session_id"?}`,
  batched by session in file order.

A file is read and checked whole before anything is stored: a mistake anywhere in it is an
`InvalidInput` with one line per problem, naming the file, where in it (line, or LoCoMo session and
turn) and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from memsvc.errors import InvalidInput
from memsvc.schemas import AddRequest, Message

LOCOMO_TIME = "%I:%M %p on %d %B, %Y"
BEAM_TIME = "%B-%d-%Y"
JSONL_BATCH = 200


def parse_locomo_time(text: str) -> datetime:
    return datetime.strptime(text.strip(), LOCOMO_TIME).replace(tzinfo=UTC)


def _problem(where: str, error: ErrorDetails, user_id: str, fields: dict[str, str]) -> str:
    """One line for one validation error, the field named as the file names it."""
    if tuple(error["loc"]) == ("user_id",):
        return f"user id {user_id!r}: {error['msg']}"  # not the file's mistake: no place in it
    loc = [str(part) for part in error["loc"] if part != "messages" and not isinstance(part, int)]
    field = ".".join(fields.get(part, part) for part in loc) or "message"
    return f"{where}: {field}: {error['msg']}"


def _id_taken(where: str, fields: dict[str, str], message_id: str, first: str) -> str:
    return f"{where}: {fields.get('id', 'id')}: {message_id!r} is the id of another message ({first})"


class _Checker:
    """Validates a file's messages one by one, as they will be sent, so every error has a place."""

    def __init__(self, user_id: str, max_content_chars: int | None) -> None:
        self.user_id = user_id
        self.max_content_chars = max_content_chars
        self.ids: dict[str, tuple[str, Message]] = {}

    def message(
        self, where: str, record: dict[str, Any], session_id: object, fields: dict[str, str] | None = None
    ) -> Message:
        fields = fields or {}
        try:
            request = AddRequest.model_validate(
                {"messages": [record], "user_id": self.user_id, "session_id": session_id}
            )
        except ValidationError as exc:
            problems = dict.fromkeys(_problem(where, e, self.user_id, fields) for e in exc.errors())
            # An id already taken is a mistake of its own, named now rather than after the others.
            given = record.get("id")
            taken = self.ids.get(given) if isinstance(given, str) else None
            if isinstance(given, str) and taken is not None:
                problems[_id_taken(where, fields, given, taken[0])] = None
            raise InvalidInput("\n".join(problems)) from None
        message = request.messages[0]
        content = fields.get("content", "content")
        if self.max_content_chars and len(message.content) > self.max_content_chars:
            # Refused here rather than by the service half way through the file.
            size = len(message.content)
            raise InvalidInput(
                f"{where}: {content}: {size} characters; the limit is {self.max_content_chars}"
            )
        # One id for two messages would store only the first, even across sessions.
        if message.id is not None:
            first, earlier = self.ids.setdefault(message.id, (where, message))
            if earlier != message:
                raise InvalidInput(_id_taken(where, fields, message.id, first))
        return message


def locomo_batches(
    data: dict[str, Any],
    user_id: str,
    *,
    source: str = "LoCoMo",
    max_content_chars: int | None = None,
) -> Iterator[AddRequest]:
    """One `AddRequest` per LoCoMo session, in session order; a file with mistakes is refused
    whole, naming each (`MAX_PROBLEMS` at most)."""
    check = _Checker(user_id, max_content_chars)
    conversation = data.get("conversation", data)
    if not isinstance(conversation, dict):
        raise InvalidInput(
            f"{source}: conversation: an object of sessions, not {json.dumps(conversation)[:40]}"
        )
    numbers = sorted(int(m.group(1)) for key in conversation if (m := re.fullmatch(r"session_(\d+)", key)))
    problems: list[str] = []
    sessions = []
    for n in numbers:
        session = f"session_{n}"
        try:
            sessions.append((session, _locomo_session(check, source, session, conversation, problems)))
        except InvalidInput as exc:  # the session as a whole: no time, or no list of turns
            problems.append(str(exc))
    if problems:
        raise InvalidInput(_listed(problems))
    for session, messages in sessions:
        if messages:
            yield AddRequest(messages=messages, user_id=user_id, session_id=session)


def _locomo_session(
    check: _Checker, source: str, session: str, conversation: dict[str, Any], problems: list[str]
) -> list[Message]:
    """A LoCoMo session's messages; each turn's mistakes are added to `problems`."""
    turns, when = conversation[session], conversation.get(f"{session}_date_time")
    example = "e.g. '1:56 pm on 8 May, 2023'"
    if not isinstance(when, str):
        raise InvalidInput(f"{source}: {session}_date_time: missing, the session's start ({example})")
    try:
        start = parse_locomo_time(when)
    except ValueError:
        raise InvalidInput(f"{source}: {session}_date_time: {when!r} is not a time ({example})") from None
    if not isinstance(turns, list):
        raise InvalidInput(f"{source}: {session}: a list of turns, not {json.dumps(turns)[:40]}")
    fields = {"content": "text", "name": "speaker", "id": "dia_id"}
    messages = []
    for i, turn in enumerate(turns):
        where = f"{source}, {session} turn {i + 1}"
        if not isinstance(turn, dict):
            problems.append(f"{where}: a turn is an object {{speaker, text, dia_id}}")
            continue
        if missing := [key for key in ("speaker", "text", "dia_id") if key not in turn]:
            problems.append(f"{where}: {', '.join(missing)}: missing")
            continue
        text = turn["text"]
        if turn.get("blip_caption") and isinstance(text, str):
            text = f"{text} [photo: {turn['blip_caption']}]"
        record = {
            "role": "user",
            "name": turn["speaker"],
            "content": text,
            "id": turn["dia_id"],
            "created_at": start + timedelta(seconds=i),
        }
        try:
            messages.append(check.message(where, record, session, fields))
        except InvalidInput as exc:
            problems.append(str(exc))
    return messages


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


def jsonl_batches(
    lines: Iterator[str],
    user_id: str,
    *,
    source: str = "JSONL",
    max_content_chars: int | None = None,
) -> Iterator[AddRequest]:
    """One `AddRequest` per run of lines of one session (at most `JSONL_BATCH`); a file with
    mistakes is refused whole, naming each (`MAX_PROBLEMS` at most)."""
    check = _Checker(user_id, max_content_chars)
    read: list[tuple[Message, Any]] = []
    problems: list[str] = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                read.append(_jsonl_message(check, f"{source}, line {number}", line))
            except InvalidInput as exc:
                problems.append(str(exc))
    if problems:
        raise InvalidInput(_listed(problems))
    session: Any = None
    batch: list[Message] = []
    for message, line_session in read:
        if batch and (line_session != session or len(batch) >= JSONL_BATCH):
            yield AddRequest(messages=batch, user_id=user_id, session_id=session)
            batch = []
        session = line_session
        batch.append(message)
    if batch:
        yield AddRequest(messages=batch, user_id=user_id, session_id=session)


MAX_PROBLEMS = 20  # a file's mistakes named at most; the rest are counted


def _listed(problems: list[str]) -> str:
    lines = list(dict.fromkeys(line for problem in problems for line in problem.split("\n")))
    more = len(lines) - MAX_PROBLEMS
    return "\n".join(lines[:MAX_PROBLEMS] + ([f"… and {more} more"] if more > 0 else []))


def _jsonl_message(check: _Checker, where: str, line: str) -> tuple[Message, Any]:
    """One line as the message it holds and its `session_id`."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise InvalidInput(
            f'{where}: a message is one JSON object per line, e.g. {{"role": "user", "content": "…"}}, '
            f"not {line.strip()[:40]}"
        )
    line_session = record.pop("session_id", None)
    return check.message(where, record, line_session), line_session


def read_batches(path: Path, user_id: str, *, max_content_chars: int | None = None) -> list[AddRequest]:
    """Every batch in a LoCoMo JSON or a JSONL file (by content, not by name), all checked before
    any is returned; messages longer than `max_content_chars` are refused too, by their place."""
    # UTF-8 whatever the locale, a byte-order mark (as Windows tools write one) skipped.
    text = path.read_text(encoding="utf-8-sig")
    # Lines end at "\n" only: `splitlines` would also cut at U+2028, U+0085 and the like, which
    # JSON strings may hold unescaped (json.dumps(..., ensure_ascii=False) writes them so).
    lines = text.split("\n")
    source, limit = str(path), max_content_chars
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return list(jsonl_batches(iter(lines), user_id, source=source, max_content_chars=limit))
    try:
        data = json.loads(text)
    except ValueError:
        data = None  # not one JSON document: JSONL
    if isinstance(data, list):
        # A list of messages, or a BEAM chat (a benchmark format, not one `memsvc import` takes).
        raise InvalidInput(
            f"{path} is a JSON array: give one message object per line (JSONL) or a LoCoMo conversation"
        )
    if isinstance(data, dict) and "role" not in data:
        if "conversation" in data or any(k.startswith("session_") for k in data):
            return list(locomo_batches(data, user_id, source=source, max_content_chars=limit))
        raise InvalidInput(f"{path} is JSON but not a LoCoMo conversation")
    return list(jsonl_batches(iter(lines), user_id, source=source, max_content_chars=limit))
