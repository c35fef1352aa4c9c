"""Every error leaves as application/problem+json (RFC 9457), mapped here and only here."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from memsvc.api import deps
from memsvc.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MemsvcError,
    NotFound,
    NotReady,
    Overloaded,
    Unauthorized,
)
from memsvc.schemas import Problem

log = logging.getLogger("memsvc.api")

STATUS: dict[type[MemsvcError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    Unauthorized: 401,
    Forbidden: 403,
    Conflict: 409,
    NotReady: 503,
    Overloaded: 429,
}
MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_S = 2


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status in (429, 503):
        # A dependency is down (database restarting) or the backlog is full: come back shortly.
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


_PROBLEM_SCHEMA = Problem.model_json_schema()


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem+json answers a route may give: without them FastAPI
    documents only its own 422 shape, as application/json, and the schema would not be honest."""
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


def _echo(value: Any) -> Any:
    """Client text echoed in an error, encodable as UTF-8 (a lone surrogate would fail the answer)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(value, str) else value


def _invalid_json(reason: str, doc: Any = None, pos: Any = None) -> JSONResponse:
    where = ""
    if isinstance(doc, str) and isinstance(pos, int):
        line, column = doc.count("\n", 0, pos) + 1, pos - doc.rfind("\n", 0, pos)
        where = f" at line {line}, column {column}"
    return problem(
        400, "invalid JSON", f"request body is not valid JSON: {reason}{where}", code="invalid_json"
    )


def internal_error(exc: BaseException) -> JSONResponse:
    """The answer to a failure the server did not expect: logged whole, told in one line."""
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "internal error", "the server failed; the error is in its log", code="internal")


def _memsvc_problem(exc: MemsvcError) -> JSONResponse:
    status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
    extra = exc.extra
    if isinstance(exc, InvalidInput) and "errors" not in extra:
        # Every 422 has `errors`; a rule about no one field (`InvalidInput.at` names one) has no loc.
        extra = {**extra, "errors": [{"loc": [], "msg": exc.detail, "type": "value_error"}]}
    return problem(status, exc.code.replace("_", " "), exc.detail, code=exc.code, **extra)


def install(app: FastAPI) -> None:
    @app.exception_handler(MemsvcError)
    async def _memsvc_error(_: Request, exc: MemsvcError) -> JSONResponse:
        return _memsvc_problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media and "json" not in media and any(tuple(e.get("loc", ())) == ("body",) for e in exc.errors()):
            # A JSON body sent as text or a form: the media type, not the fields, is what is wrong.
            detail = f"the body is {media}; send it as application/json"
            return problem(415, "unsupported media type", detail, code="unsupported_media_type")
        for e in exc.errors():
            if e.get("type") == "json_invalid":  # the body did not parse: the client's syntax, not a field
                if refused := await deps.refusal(request):  # parsed before the key was checked
                    return _memsvc_problem(refused)
                return _invalid_json(e.get("ctx", {}).get("error", "syntax error"), exc.body, e["loc"][-1])
        errors = [
            {
                "loc": [_echo(p) for p in e.get("loc", ())],
                "msg": _echo(e.get("msg", "")),
                "type": e.get("type", ""),
            }
            for e in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        return problem(422, "invalid input", summary, code="invalid_input", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return internal_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError | ValueError):
            # FastAPI could not read the JSON body: nested too deeply, a number too long, not UTF-8.
            if refused := await deps.refusal(request):
                return _memsvc_problem(refused)
            cause = exc.__cause__
            reason = "nested too deeply" if isinstance(cause, RecursionError) else str(cause).split(";")[0]
            return _invalid_json(reason)
        # No such route answers as no such memory does; the codes are the documented ones.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        where = f"{request.method} {request.url.path}"
        allowed = (exc.headers or {}).get("Allow")
        detail = {
            404: f"{where}: no such route (the API is at /v1/…; see /docs)",
            405: f"{where}: not allowed here" + (f"; allowed: {allowed}" if allowed else ""),
        }.get(exc.status_code)
        answer = problem(exc.status_code, str(exc.detail), detail, code=code)
        answer.headers.update(exc.headers or {})  # a 405's `Allow`
        return answer
