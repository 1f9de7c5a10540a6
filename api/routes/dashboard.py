"""The dashboard: one static page and its assets, served from the package; its data comes from
the same JSON routes as everyone's, called by the browser with the key the person typed in."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request, Response

from api.errors import Problem

router = APIRouter(tags=["dashboard"], include_in_schema=False)
ROUTER_RESPONSES: dict[int | str, dict[str, Any]] = {}  # no key: the page asks for one

# Nothing inline and nothing from elsewhere: scripts, styles and fetches from this origin only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# The files the page may load, by the path it asks for: a fixed list, so no path is resolved
# from the request (nothing outside it can be read).
ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "js/api.js": "text/javascript; charset=utf-8",
    "js/charts.js": "text/javascript; charset=utf-8",
    "js/main.js": "text/javascript; charset=utf-8",
    "js/money.js": "text/javascript; charset=utf-8",
    "js/views.js": "text/javascript; charset=utf-8",
    "vendor/chart.js/chart.umd.min.js": "text/javascript; charset=utf-8",
    "vendor/chart.js/LICENSE.md": "text/plain; charset=utf-8",
}


@cache
def _read(name: str) -> bytes:
    return resources.files("api").joinpath("dashboard", name).read_bytes()


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@router.get("/dashboard", summary="The dashboard page")
async def dashboard_page() -> Response:
    """The page; it asks for a key and keeps it in the tab's memory only."""
    return Response(
        _read("index.html"),
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


@router.get("/dashboard/static/{name:path}", summary="A dashboard asset")
async def dashboard_asset(name: str, request: Request) -> Response:
    """One of the page's scripts, its stylesheet or the charting library (with its licence)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise Problem(404, "not_found", f"no dashboard asset named {name!r}")
    body = _read(name)
    etag = _etag(body)
    headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)
