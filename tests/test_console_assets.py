"""The console's files as the bridge serves them: where, with which security
and cache headers, and that the committed build is complete."""

from __future__ import annotations

import re

from gateway.console import DIST
from tests.stack import Stack


async def test_console_redirects_and_serves_index_with_a_strict_csp(offline_stack: Stack) -> None:
    async with offline_stack.http() as http:
        moved = await http.get("/console")
        assert moved.status_code == 308 and moved.headers["location"] == "/console/"
        index = await http.get("/console/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    csp = index.headers["content-security-policy"]
    # No 'unsafe-inline' and no 'unsafe-eval': markup in a model reply can never run.
    assert "script-src 'self'" in csp and "unsafe" not in csp and "default-src 'none'" in csp
    assert index.headers["x-content-type-options"] == "nosniff"
    assert index.headers["cache-control"] == "no-cache"  # the page names the current bundles


async def test_bundles_are_hashed_and_cached_for_good(offline_stack: Stack) -> None:
    page = (DIST / "index.html").read_text()
    assets = re.findall(r'(?:src|href)="\./([^"]+)"', page)
    assert {name.rsplit(".", 1)[1] for name in assets} == {"js", "css"}
    assert "<script>" not in page and "style=" not in page  # nothing inline
    async with offline_stack.http() as http:
        for name in assets:
            response = await http.get(f"/console/{name}")
            assert response.status_code == 200, name
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert "content-security-policy" in response.headers


async def test_the_console_calls_only_the_public_rest_api() -> None:
    bundle = next(DIST.glob("main-*.js")).read_text()
    assert '"/agentapi/v1"' in bundle
    # No other API base: the console can do nothing a program cannot.
    assert not re.search(r'fetch\("/(?!agentapi)', bundle)


def test_serve_prints_the_console_url(capsys) -> None:  # type: ignore[no-untyped-def]
    from server.app import announce
    from server.config import Config

    announce(Config(database_url="sqlite+aiosqlite:///x.db", http_addr="127.0.0.1:8080"), 50051, 8080)
    assert "agentapi console: http://127.0.0.1:8080/console/" in capsys.readouterr().out
