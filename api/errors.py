"""Every error as application/problem+json (RFC 9457): type, title, status, detail, code, extras."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import DomainError

log = logging.getLogger("meterline.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://meterline.dev/problems/"
RETRY_AFTER_S = 5  # what a 503 asks the client to wait while a dependency is away


class Problem(DomainError):
    """An error the HTTP layer itself answers (auth, forbidden, rate limit, request rules).

    Domain errors carry their own code and status (schemas.errors.DomainError); a Problem sets
    them per instance. ``detail`` says what happened and what to do; extra keyword arguments
    become extra members of the body. ``headers`` (a keyword) are sent with the answer, e.g.
    WWW-Authenticate or Retry-After.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail, **extra)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})


def invalid_field(field: str, rule: str, message: str, *, detail: str | None = None) -> Problem:
    """A 422 validation_error for one field, shaped as the request-validation handler's answer.

    ``detail`` replaces ``message`` in the human-readable text, e.g. to add a hint.
    """
    return Problem(
        422,
        "validation_error",
        f"invalid request: {field}: {detail or message} (rule: {rule})",
        errors=[{"field": field, "rule": rule, "message": message}],
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of a problem."""
    return {
        "type": PROBLEM_TYPE_BASE + code,
        "title": _title(status),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response."""
    return JSONResponse(
        problem_body(status, code, detail, **extra),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _field(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc)


def validation_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Pydantic / FastAPI errors as [{field, rule, message}] (never echoing the input)."""
    out = []
    for err in errors:
        message = str(err.get("msg", "invalid"))
        ctx = err.get("ctx") or {}
        loc = err.get("loc", ())
        if "error" in ctx and message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        if err.get("type") == "json_invalid" and len(loc) == 2 and loc[0] == "body":
            # FastAPI's loc is ("body", character position): "body.1" reads as a list index.
            why = ctx.get("error", "cannot be decoded")
            message = f"is not valid JSON: {why} (at character {loc[1]})"
            loc = ("body",)
        out.append(
            {
                "field": _field(loc),
                "rule": str(err.get("type", "invalid")),
                "message": message,
            }
        )
    return out


def validation_problem(errors: list[dict[str, str]]) -> JSONResponse:
    """422 naming each field and the rule it broke."""
    parts = [f"{e['field']}: {e['message']} (rule: {e['rule']})" for e in errors[:5]]
    more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
    return problem_response(
        422, "validation_error", "invalid request: " + "; ".join(parts) + more, errors=errors
    )


async def _on_domain(request: Request, exc: Exception) -> JSONResponse:
    # Every DomainError (ledger, catalog, pricing, money, adapters, Problem): its own code,
    # status, message and extra members.
    assert isinstance(exc, DomainError)
    return problem_response(exc.status, exc.code, exc.detail, headers=exc.headers, **exc.extra)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(validation_errors(exc.errors()))


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


# What FastAPI answers 400 for when json.loads fails with anything but a JSONDecodeError.
_BODY_PARSE_FAILED = "There was an error parsing the body"


def _unreadable_body(cause: BaseException) -> JSONResponse:
    """422 naming the body and why it cannot be read (the route never ran)."""
    if isinstance(cause, UnicodeDecodeError):
        rule, message = "invalid_utf8", "is not UTF-8 (a JSON body is UTF-8 text, RFC 8259)"
    elif isinstance(cause, RecursionError):
        rule, message = "too_deep", "nests arrays or objects too deeply to be read"
    elif "integer string conversion" in str(cause):
        rule, message = "too_large", "holds an integer of more than 4300 digits"
    else:
        rule, message = "json_invalid", f"is not valid JSON: {str(cause).splitlines()[0]}"
    return validation_problem([{"field": "body", "rule": rule, "message": message}])


class BodyTooLarge(Problem):
    """413: the body is larger than the API reads (METERLINE_MAX_BODY_BYTES)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "payload_too_large",
            f"the request body is larger than {limit} bytes, the most this API reads; send "
            "fewer events per request (HTTP ingest takes up to 1000)",
            limit=limit,
        )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__
    if exc.status_code == 400 and exc.detail == _BODY_PARSE_FAILED and cause is not None:
        if isinstance(cause, BodyTooLarge):  # raised by the guard's receive, while reading
            return await _on_domain(request, cause)
        return _unreadable_body(cause)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else _title(exc.status_code)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route matches {request.method} {request.url.path}"
    return problem_response(exc.status_code, code, detail, headers=exc.headers)


# A value the database (or asyncpg encoding it) refuses: SQLSTATE class 22 (NUL in text,
# numeric or datetime out of range, bad encoding) and CHECK constraints. The bounds at the
# edge should have refused it first; this backstop keeps a missed one a 422 that stores
# nothing (the transaction rolled back) instead of a 500 that drops the connection.
_REFUSED_VALUES: tuple[type[Exception], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.CheckViolationError,
    OverflowError,
)


async def _on_refused_value(request: Request, exc: Exception) -> JSONResponse:
    log.warning(
        "refused value on %s %s: %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc,
    )
    rule = "value_refused" if isinstance(exc, asyncpg.PostgresError) else "value_out_of_range"
    message = (
        "a value of this request cannot be stored "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'out of range'})"
    )
    return problem_response(
        422,
        "validation_error",
        f"invalid request: {message}; nothing was written. Check the request against the "
        "documented bounds (no control characters, counts <= 10^12, times 1970..9999).",
        errors=[{"field": "body", "rule": rule, "message": message}],
    )


# Postgres away: refused or lost connections, the server restarting or shutting down (SQLSTATE
# classes 08 and 57), too many clients, and the pool's bounded connect/command timeouts.
_DATABASE_AWAY: tuple[type[Exception], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    # A connection's protocol caught mid-operation by a server shutting down ("cannot switch
    # to state 12; another operation (2) is in progress"): seen on pg_ctl restart -m fast.
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    TimeoutError,
)


# What means every connection of the pool is gone (a restart), not just a slow query.
_CONNECTION_LOST: tuple[type[Exception], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
)


def _database_away(exc: Exception) -> bool:
    if isinstance(exc, asyncpg.exceptions.InterfaceError):
        # Only a closed connection; other interface errors are bugs and stay 500s.
        return "closed" in str(exc) or "closing" in str(exc)
    return True


async def _on_dependency_away(request: Request, exc: Exception) -> JSONResponse:
    if not _database_away(exc):
        return await _on_unexpected(request, exc)
    lost = isinstance(exc, _CONNECTION_LOST) or isinstance(exc, asyncpg.InterfaceError)
    pool = getattr(request.app.state, "pool", None)
    if lost and isinstance(pool, asyncpg.Pool):
        # A restart broke every idle connection, not just this one: replace them all on their
        # next use instead of failing one request per stale connection.
        await pool.expire_connections()
    log.warning(
        "dependency unavailable on %s %s: %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc,
    )
    return problem_response(
        503,
        "database_unavailable",
        f"the database is not answering ({type(exc).__name__}); nothing was written. The "
        f"service reconnects by itself: retry in {RETRY_AFTER_S} s.",
        headers={"Retry-After": str(RETRY_AFTER_S)},
        dependency="postgres",
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Logged with its traceback here; the client gets no internals (SQL, keys, paths).
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        500,
        "internal_error",
        "the server failed to answer this request; it has been logged. Retry later.",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error the app can raise as problem+json."""
    app.add_exception_handler(DomainError, _on_domain)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    for refused in _REFUSED_VALUES:
        app.add_exception_handler(refused, _on_refused_value)
    for away in _DATABASE_AWAY:
        app.add_exception_handler(away, _on_dependency_away)
    app.add_exception_handler(Exception, _on_unexpected)
