"""The one exception hierarchy of memsvc. `api/` maps each class to an HTTP status in one place."""

from __future__ import annotations

from typing import Any


class MemsvcError(Exception):
    """Base class: catch this to catch every memsvc error."""

    code = "memsvc_error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(MemsvcError):
    """The caller sent something we will not store or cannot answer."""

    code = "invalid_input"

    @classmethod
    def at(cls, loc: tuple[str | int, ...], detail: str, kind: str = "value_error") -> InvalidInput:
        """One field's error, named as a request's validation names its fields (`errors: [{loc,
        msg, type}]`), with `detail` as the whole problem's."""
        return cls(detail, errors=[{"loc": ["body", *loc], "msg": detail, "type": kind}])


class NotFound(MemsvcError):
    """No such memory, job or user in the caller's tenant (also when it exists in another tenant)."""

    code = "not_found"


class Unauthorized(MemsvcError):
    """Missing, malformed, unknown or revoked API key."""

    code = "unauthorized"


class Forbidden(MemsvcError):
    """A valid API key without the scope the operation needs (e.g. a read-only key writing)."""

    code = "forbidden"


class Conflict(MemsvcError):
    """The request clashes with the current state (e.g. a tenant name already taken)."""

    code = "conflict"


class NotReady(MemsvcError):
    """A dependency (database, model) is not available yet."""

    code = "not_ready"


class Overloaded(MemsvcError):
    """Too much accepted work is still waiting (the tenant's ingest backlog is full): try again later.
    Nothing of the refused request was stored, so any request may be sent again."""

    code = "overloaded"
