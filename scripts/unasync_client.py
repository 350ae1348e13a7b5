"""Generates the sync client (clients/python/src/agentapi/_sync) from the async one
(``_async``) with unasync, as httpcore does: one source, two clients that cannot drift.

``python scripts/unasync_client.py`` rewrites _sync; ``--check`` fails when it is stale (make lint).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import unasync

ROOT = Path(__file__).resolve().parent.parent / "clients/python/src/agentapi"
RENAMES = {
    "AsyncRetrying": "Retrying",
    "AsyncTransport": "SyncTransport",
    "async_channel": "sync_channel",
    "AsyncClient": "Client",
    "AsyncResource": "SyncResource",
    "AsyncTurnStream": "TurnStream",
    "AsyncAgents": "Agents",
    "AsyncConversations": "Conversations",
    "AsyncSessions": "Sessions",
    "AsyncMessages": "Messages",
    "AsyncModels": "Models",
    "AsyncTenants": "Tenants",
    "AsyncApiKeys": "ApiKeys",
    "AsyncUsage": "Usage",
    "AsyncMcpServers": "McpServers",
    "_async": "_sync",
}
DOC_RENAMES = {
    "async with ": "with ",
    "await ": "",
    "AsyncClient": "Client",
    "AsyncTurnStream": "TurnStream",
    "The async client; ``agentapi._sync`` is generated from it": "The sync client, generated",
}
HEADER = "# Generated from agentapi/_async by scripts/unasync_client.py. Do not edit.\n"


def generate(target: Path) -> None:
    sources = sorted((ROOT / "_async").glob("*.py"))
    rule = unasync.Rule(str(ROOT / "_async"), str(target), additional_replacements=RENAMES)
    unasync.unasync_files([str(p) for p in sources], [rule])
    for path in target.glob("*.py"):
        text = path.read_text()
        for old, new in DOC_RENAMES.items():  # unasync renames code tokens, not words in docstrings
            text = text.replace(old, new)
        path.write_text(HEADER + text)


def main() -> int:
    if "--check" not in sys.argv:
        generate(ROOT / "_sync")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [p.name for p in Path(tmp).glob("*.py") if p.read_text() != (ROOT / "_sync" / p.name).read_text()]
        stale += [p.name for p in (ROOT / "_sync").glob("*.py") if not (Path(tmp) / p.name).exists()]
    if stale:
        print(f"agentapi/_sync is stale ({', '.join(sorted(stale))}): run python scripts/unasync_client.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
