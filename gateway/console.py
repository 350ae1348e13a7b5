"""The web console at ``/console``: static files built from ``console/`` into
``gateway/console_dist/`` (``make console``), served by the bridge itself so
there is nothing else to start. The console calls only the public REST API.

Every response carries a strict Content-Security-Policy: scripts only from this
origin (no inline script, no eval), so a model reply containing ``<script>``
can never run even if it reached the DOM as markup (the console sanitizes the
Markdown it renders from model text with DOMPurify besides). ``index.html`` is revalidated on every load;
the bundles have content hashes in their names and are cached for a year.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

DIST = Path(__file__).with_name("console_dist")

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


class ConsoleFiles(StaticFiles):
    """StaticFiles with the console's security and cache headers."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        hashed = Path(full_path).suffix in (".js", ".css")  # esbuild names them [name]-[hash]
        response.headers["Cache-Control"] = IMMUTABLE if hashed else REVALIDATE
        return response


async def _to_console(request: object) -> Response:
    return RedirectResponse("/console/", status_code=308)


def routes() -> list[BaseRoute]:
    """``/console`` (redirect) and ``/console/...`` (the files); none when the build is missing."""
    if not (DIST / "index.html").is_file():
        return []
    return [
        Route("/console", _to_console, methods=["GET", "HEAD"]),
        Mount("/console", app=ConsoleFiles(directory=DIST, html=True), name="console"),
    ]
