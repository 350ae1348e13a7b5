"""agentapi client: generated stubs in ``agentapi.v1``, typed errors in ``agentapi.errors``."""
