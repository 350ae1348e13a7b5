"""The async client; ``agentapi._sync`` is generated from it by scripts/unasync_client.py."""
