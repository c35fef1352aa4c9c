from __future__ import annotations

from typing import Any


class MemsvcClientError(Exception):
    """Base of every SDK error."""


class ConnectionFailed(MemsvcClientError):
    """The server could not be reached (after retries)."""


class APIError(MemsvcClientError):
    """The server answered with an error; `problem` is its problem+json body."""

    def __init__(self, status_code: int, problem: dict[str, Any]) -> None:
        self.status_code = status_code
        self.problem = problem
        self.detail = problem.get("detail") or problem.get("title") or ""
        super().__init__(f"{status_code} {problem.get('title', '')}: {self.detail}")


class BadRequest(APIError):
    """4xx: the request was wrong (invalid input, unknown id)."""


class AuthenticationError(BadRequest):
    """401: missing, unknown or revoked API key."""


class NotFoundError(BadRequest):
    """404."""


class ServerError(APIError):
    """5xx: the server failed."""


def error_for(status_code: int, body: dict[str, Any]) -> APIError:
    if status_code == 401:
        return AuthenticationError(status_code, body)
    if status_code == 404:
        return NotFoundError(status_code, body)
    if status_code < 500:
        return BadRequest(status_code, body)
    return ServerError(status_code, body)
