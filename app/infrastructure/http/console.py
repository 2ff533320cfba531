"""The web console: static files (no build step) served by the API's own app.

`GET /` answers the console's page; `/console/*` serves its scripts and styles. Both carry a
strict Content-Security-Policy (scripts and styles from this origin only, no inline script,
no remote origin), so that model output rendered by the console can never run code. The
console talks to the public API only (docs/console.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

CONSOLE_DIR = Path(__file__).resolve().parent / "console"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


async def _add_security_headers(response: Response[Any]) -> Response[Any]:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


@get("/", include_in_schema=False, cache=False)
async def console_index() -> Response[bytes]:
    """The console's single page (its scripts load from /console/)."""
    return Response(
        (CONSOLE_DIR / "index.html").read_bytes(),
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )


def console_route_handlers() -> list[Any]:
    """The page at `/` and its assets under `/console/` (public paths in `http/auth.py`)."""
    assets: Router = create_static_files_router(
        path="/console",
        directories=[CONSOLE_DIR],
        name="console",
        html_mode=True,
        # Revalidate every time: an upgraded server never runs with yesterday's scripts.
        cache_control=CacheControlHeader(no_cache=True),
        after_request=_add_security_headers,
        include_in_schema=False,
    )
    return [console_index, assets]
