"""What `memsvc import` reads, and how it names a mistake in a file: by place and field, one line each."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from memsvc.errors import InvalidInput
from memsvc.importers import read_batches

LOCOMO = Path(__file__).resolve().parents[3] / "shared" / "data" / "locomo" / "conv-26.json"


def _jsonl(tmp_path: Path, *records: object) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _error(path: Path, user_id: str = "u", **kwargs: int) -> str:
    with pytest.raises(InvalidInput) as caught:
        read_batches(path, user_id, **kwargs)
    return caught.value.detail


def test_jsonl_batches_by_session_in_file_order(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path,
        {"role": "user", "content": "a", "session_id": "s1"},
        {"role": "assistant", "content": "b", "session_id": "s1"},
        {"role": "user", "content": "c", "session_id": "s2"},
    )
    batches = read_batches(path, "u")
    assert [(b.session_id, [m.content for m in b.messages]) for b in batches] == [
        ("s1", ["a", "b"]),
        ("s2", ["c"]),
    ]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("5", "line 2: a message is one JSON object per line"),
        ('[{"role": "user", "content": "hi"}]', "line 2: a message is one JSON object per line"),
        (
            '{"role": "user", "content": "hi", "session_id": 5}',
            "line 2: session_id: Input should be a valid string",
        ),
        ('{"role": "user", "content": ""}', "line 2: content: String should have at least 1 character"),
        ('{"role": "user", "content": "  "}', "line 2: content: must not be blank"),
        ("{nope", "line 2: not JSON"),
    ],
)
def test_a_bad_jsonl_line_is_named_by_file_line_and_field(tmp_path: Path, line: str, says: str) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text('{"role": "user", "content": "fine"}\n' + line + "\n")
    detail = _error(path)
    assert detail == detail.strip() and "\n" not in detail, detail  # one line, no pydantic dump
    assert detail.startswith(f"{path}, {says}"), detail


def test_each_problem_of_a_line_is_one_line(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, {"role": "robot", "content": "", "colour": "red"})
    assert _error(path).splitlines() == [
        f"{path}, line 1: role: Input should be 'user', 'assistant', 'system' or 'tool'",
        f"{path}, line 1: content: String should have at least 1 character",
        f"{path}, line 1: colour: Extra inputs are not permitted",
    ]


def test_a_json_array_of_messages_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([{"role": "user", "content": "hi"}], indent=2))
    assert _error(path) == (
        f"{path} is a JSON array: give one message object per line (JSONL) or a LoCoMo conversation"
    )


def test_a_blank_user_id_is_named_as_such(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, {"role": "user", "content": "hi"})
    assert _error(path, " ").startswith("user id ' ': must be printable text, not blank")


def test_a_user_id_in_a_line_is_that_line_s_unknown_field(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, {"role": "user", "content": "hi", "user_id": "r8"})
    assert _error(path) == f"{path}, line 1: user_id: Extra inputs are not permitted"


def test_one_id_for_two_messages_is_refused_even_across_sessions(tmp_path: Path) -> None:
    """Ingest knows a message by its id: the second would silently not be stored."""
    path = _jsonl(
        tmp_path,
        {"role": "user", "content": "a", "id": "m1", "session_id": "s1"},
        {"role": "user", "content": "b", "id": "m1", "session_id": "s2"},
    )
    assert _error(path) == f"{path}, line 2: id: 'm1' is the id of another message ({path}, line 1)"
    # With another mistake in the same line, both are named.
    both = _jsonl(
        tmp_path, {"role": "user", "content": "a", "id": "m1"}, {"role": "bot", "content": "b", "id": "m1"}
    )
    problems = _error(both).splitlines()
    assert len(problems) == 2 and problems[0].startswith(f"{both}, line 2: role: ")
    assert problems[1] == f"{both}, line 2: id: 'm1' is the id of another message ({both}, line 1)"


def test_a_message_over_the_length_limit_is_named_before_anything_is_sent(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, {"role": "user", "content": "short"}, {"role": "user", "content": "x" * 30})
    assert read_batches(path, "u", max_content_chars=30)
    assert _error(path, max_content_chars=29) == f"{path}, line 2: content: 30 characters; the limit is 29"


def _locomo(tmp_path: Path, conversation: dict[str, object]) -> Path:
    path = tmp_path / "conv.json"
    path.write_text(json.dumps({"conversation": conversation}))
    return path


def test_a_locomo_session_without_its_time_is_named(tmp_path: Path) -> None:
    path = _locomo(tmp_path, {"session_1": [{"speaker": "A", "dia_id": "D1:1", "text": "hi"}]})
    assert _error(path).startswith(f"{path}: session_1_date_time: missing")


@pytest.mark.parametrize(
    ("turn", "says"),
    [
        ({"speaker": "A", "dia_id": "D1:2"}, "session_1 turn 2: text: missing"),
        ({"speaker": "A", "dia_id": "D1:2", "text": ""}, "session_1 turn 2: text: String should have"),
        ({"speaker": 7, "dia_id": "D1:2", "text": "hi"}, "session_1 turn 2: speaker: Input should be"),
        ("hello", "session_1 turn 2: a turn is an object"),
    ],
)
def test_a_bad_locomo_turn_is_named_by_session_turn_and_field(
    tmp_path: Path, turn: object, says: str
) -> None:
    good = {"speaker": "A", "dia_id": "D1:1", "text": "hi"}
    path = _locomo(tmp_path, {"session_1_date_time": "1:56 pm on 8 May, 2023", "session_1": [good, turn]})
    assert _error(path).startswith(f"{path}, {says}")


def test_a_locomo_conversation_reads_as_before() -> None:
    batches = read_batches(LOCOMO, "u")
    data = json.loads(LOCOMO.read_text())
    sessions = [k for k in data if re.fullmatch(r"session_\d+", k) and data[k]]
    assert len(batches) == len(sessions)
    first = batches[0].messages[0]
    assert (first.id, first.name) == (data["session_1"][0]["dia_id"], data["session_1"][0]["speaker"])
    assert first.created_at is not None and first.created_at.isoformat() == "2023-05-08T13:56:00+00:00"


def test_every_mistake_of_a_file_is_named(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path,
        {"role": "user", "content": "fine"},
        {"role": "robot", "content": "a"},
        {"role": "user", "content": ""},
    )
    assert _error(path).splitlines() == [
        f"{path}, line 2: role: Input should be 'user', 'assistant', 'system' or 'tool'",
        f"{path}, line 3: content: String should have at least 1 character",
    ]


def test_every_mistake_of_a_locomo_file_is_named(tmp_path: Path) -> None:
    good = {"speaker": "A", "dia_id": "D1:1", "text": "hi"}
    path = _locomo(
        tmp_path,
        {
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                good,
                {"speaker": "A", "dia_id": "D1:2"},
                {"speaker": 7, "dia_id": "D1:3", "text": "x"},
            ],
            "session_2": [{"speaker": "B", "dia_id": "D2:1", "text": "hello"}],
            "session_3_date_time": "1:56 pm on 9 May, 2023",
            "session_3": [{"speaker": "B", "dia_id": "D1:1", "text": "not hi"}],
        },
    )
    assert _error(path).splitlines() == [
        f"{path}, session_1 turn 2: text: missing",
        f"{path}, session_1 turn 3: speaker: Input should be a valid string",
        f"{path}: session_2_date_time: missing, the session's start (e.g. '1:56 pm on 8 May, 2023')",
        f"{path}, session_3 turn 1: dia_id: 'D1:1' is the id of another message ({path}, session_1 turn 1)",
    ]
