"""``pip install ./clients/python`` alone, in a clean virtualenv, gives a working
``agentapi`` command: ``agentapi chat --once`` against the real server. pip may
fetch the client's dependencies from the configured package index (~15 s)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import MASTER_KEY, Stack
from tests.test_client import OFFLINE, target

CLIENT = Path(__file__).resolve().parent.parent / "clients" / "python"


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("fresh")
    source = root / "client"  # a copy: pip builds in the source tree, which must stay clean
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv.create(root / "venv", with_pip=True)
    pip = subprocess.run(
        [str(root / "venv" / "bin" / "pip"), "install", "-q", str(source)], capture_output=True, text=True, timeout=600
    )
    if pip.returncode != 0:
        pytest.fail(f"pip install ./clients/python failed:\n{pip.stderr[-3000:]}")
    yield root / "venv"


async def test_pip_install_gives_a_working_agentapi_chat(offline_stack: Stack, fresh_venv: Path) -> None:
    agentapi = fresh_venv / "bin" / "agentapi"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTAPI_", "PYTHON"))}
    env |= {"AGENTAPI_URL": target(offline_stack), "AGENTAPI_API_KEY": MASTER_KEY}
    process = await asyncio.create_subprocess_exec(
        str(agentapi), "chat", "--model", OFFLINE, "--once", "hello from a clean install",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().strip() and b"session " in stderr
    # the server's commands are not there: this environment has the client only
    python = str(fresh_venv / "bin" / "python")
    check = subprocess.run([python, "-c", "import server"], capture_output=True, cwd=fresh_venv, env=env)
    assert check.returncode != 0
    help_text = subprocess.run([str(agentapi), "--help"], capture_output=True, text=True, cwd=fresh_venv, env=env)
    assert "│ chat " in help_text.stdout and "│ serve " not in help_text.stdout
