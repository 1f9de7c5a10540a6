"""Refuses a URL whose percent-escapes are not UTF-8, before any route reads its path or query.

The server decodes ``%FF`` in a path or query into U+FFFD (urllib's errors="replace"), so
``?account_id=%FF`` and ``?account_id=%FE`` would both name the account "\\ufffd": a value the
client never sent, stored as if it had, and two different inputs meaning the same account.
Every identifier the API takes is text, so bytes that are not UTF-8 are refused as a 422
naming the parameter, and nothing is read or written.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import invalid_field, problem_response

_RULE = "invalid_utf8"
_MESSAGE = "is not UTF-8 once percent-decoded; percent-encode the UTF-8 bytes of the text"


def _is_utf8(raw: bytes) -> bool:
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _bad_query_field(query: bytes) -> str | None:
    """query.<name> of the first parameter whose name or value is not UTF-8, else None."""
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        if not _is_utf8(name.replace(b"+", b" ")):
            return "query"
        if not _is_utf8(value.replace(b"+", b" ")):
            return "query." + unquote_to_bytes(name.replace(b"+", b" ")).decode()
    return None


def _bad_field(scope: Scope) -> str | None:
    raw_path: bytes | None = scope.get("raw_path")
    # Most requests carry no escape and no byte past ASCII: two scans, nothing decoded.
    if raw_path is not None and (b"%" in raw_path or not raw_path.isascii()):
        if not _is_utf8(raw_path):
            return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%" in query or not query.isascii():
        return _bad_query_field(query)
    return None


class Utf8UrlMiddleware:
    """Answers 422 (problem+json naming path or query.<name>) to a URL that is not UTF-8."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            field = _bad_field(scope)
            if field is not None:
                problem = invalid_field(field, _RULE, _MESSAGE)
                response = problem_response(
                    problem.status, problem.code, problem.detail, **problem.extra
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
