"""Refusals made before routing: a URL that is not UTF-8, a body larger than the limit.

URL. The server decodes ``%FF`` in a path or query into U+FFFD (urllib's errors="replace"), so
``?account_id=%FF`` and ``?account_id=%FE`` would both name the account "\\ufffd": a value the
client never sent, stored as if it had, and two different inputs meaning the same account.
Every identifier the API takes is text, so bytes that are not UTF-8 are refused as a 422
naming the parameter, and nothing is read or written.

Body. A JSON body is parsed in one go on the event loop: a 300 MB body held the loop 4 s and
took 1 GB. A Content-Length past ``max_body_bytes`` is answered 413 (problem+json) before a
byte is read; a body without one (chunked) is counted as it is read, and the read fails with
BodyTooLarge, which api/errors.py renders as the same 413.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import BodyTooLarge, invalid_field, problem_response

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


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class RequestGuardMiddleware:
    """422 (problem+json naming path or query.<name>) to a URL that is not UTF-8; 413 to a
    declared Content-Length past max_body_bytes."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

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
            length = _declared_length(scope)
            if length is not None and length > self.max_body_bytes:
                too_large = BodyTooLarge(self.max_body_bytes)
                response = problem_response(
                    too_large.status, too_large.code, too_large.detail, **too_large.extra
                )
                await response(scope, receive, send)
                return
            if length is None:
                receive = self._counted(receive)
        await self.app(scope, receive, send)

    def _counted(self, receive: Receive) -> Receive:
        """receive, failing with BodyTooLarge once the body read passes the limit."""
        read = 0

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        return counted
