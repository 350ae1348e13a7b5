"""Adapters that execute tool calls on the server: the built-in registry and
MCP servers. The run (server/domain/runs/) sees only :mod:`.base`."""
