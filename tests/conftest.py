"""Fixtures: real databases (SQLite file, MariaDB), the scripted upstream behind a
real LiteLLM proxy, and running agentapi stacks.

A missing MariaDB or LiteLLM virtualenv skips the tests that need it, with the
reason printed; with ``AGENTAPI_REQUIRE_ALL=1`` (CI) it fails them instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pymysql
import pytest
from sqlalchemy.engine import make_url

from server.store.migrate import upgrade
from tests.stack import Stack, start_stack

MYSQL_SERVER_URL = os.environ.get("AGENTAPI_TEST_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306/")


def unavailable(reason: str) -> None:
    """Skips, or fails under AGENTAPI_REQUIRE_ALL (CI must run every suite)."""
    if os.environ.get("AGENTAPI_REQUIRE_ALL"):
        pytest.fail(f"required test dependency unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def _mysql_connect(database: str | None = None) -> pymysql.connections.Connection:
    url = make_url(MYSQL_SERVER_URL)
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        database=database,
        connect_timeout=3,
    )


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'agentapi.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    name = f"agentapi_test_{uuid.uuid4().hex[:8]}"
    try:
        connection = _mysql_connect()
    except pymysql.err.OperationalError as exc:
        unavailable(f"MariaDB/MySQL not reachable at {MYSQL_SERVER_URL}: {exc}")
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    url = str(make_url(MYSQL_SERVER_URL).set(database=name).render_as_string(hide_password=False))
    upgrade(url)
    yield url
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE {name}")
    connection.close()


@pytest.fixture(params=["sqlite", "mariadb"], scope="session")
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on MariaDB."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(scope="session")
def upstream() -> Iterator[Any]:
    """The scripted OpenAI-compatible upstream (see tests/support/upstream.py)."""
    from tests.support.upstream import ScriptedUpstream

    with ScriptedUpstream() as server:
        yield server


@pytest.fixture(scope="session")
def litellm(upstream: Any) -> Iterator[Any]:
    """The real LiteLLM proxy, in its own virtualenv, routing to the scripted upstream."""
    from tests.support import litellm_proxy

    ok, reason = litellm_proxy.available()
    if not ok:
        unavailable(reason)
    with litellm_proxy.LiteLLMProxy(upstream.base_url) as proxy:
        yield proxy


@pytest.fixture(scope="session")
async def stack(database_url: str, litellm: Any) -> AsyncIterator[Stack]:
    """agentapi on SQLite or MariaDB, through the real LiteLLM proxy to the scripted upstream."""
    # Short backoffs keep retried failures quick; the policy itself is the same.
    running = await start_stack(
        database_url,
        f"{litellm.base_url}/v1",
        litellm.master_key,
        retry_initial_backoff_s=0.01,
        retry_max_backoff_s=0.05,
    )
    yield running
    await running.stop()


@pytest.fixture(scope="session")
async def offline_stack(sqlite_url: str) -> AsyncIterator[Stack]:
    """agentapi on SQLite with the built-in offline model: the embedded default."""
    running = await start_stack(sqlite_url)
    yield running
    await running.stop()


@pytest.fixture
def key() -> str:
    """A unique agent key for one test."""
    return f"agent-{uuid.uuid4().hex[:10]}"
