from __future__ import annotations

from typing import Any


class MemsvcClientError(Exception):
    """Base of every SDK error."""


class ConnectionFailed(MemsvcClientError):
    """No answer from the server: it could not be reached, or the connection failed or timed out
    before its answer (after whatever retries were safe)."""


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


class PermissionDenied(BadRequest):
    """403: the key is valid but lacks the scope the route needs (`problem["scope"]` names it)."""


class NotFoundError(BadRequest):
    """404."""


class ServerError(APIError):
    """5xx: the server failed."""


class ServiceUnavailable(ServerError):
    """503: a dependency of the server is down for now; `retry_after` is its hint in seconds, if given."""

    def __init__(self, status_code: int, problem: dict[str, Any], retry_after: float | None = None) -> None:
        super().__init__(status_code, problem)
        self.retry_after = retry_after


class Overloaded(BadRequest):
    """429: the tenant's ingest backlog is full; nothing was stored. `retry_after` is the server's hint."""

    def __init__(self, status_code: int, problem: dict[str, Any], retry_after: float | None = None) -> None:
        super().__init__(status_code, problem)
        self.retry_after = retry_after


def error_for(status_code: int, body: dict[str, Any], retry_after: float | None = None) -> APIError:
    if status_code == 503:
        return ServiceUnavailable(status_code, body, retry_after)
    if status_code == 429:
        return Overloaded(status_code, body, retry_after)
    if status_code == 401:
        return AuthenticationError(status_code, body)
    if status_code == 403:
        return PermissionDenied(status_code, body)
    if status_code == 404:
        return NotFoundError(status_code, body)
    if status_code < 500:
        return BadRequest(status_code, body)
    return ServerError(status_code, body)
