"""``python -m agentapi``: the ``agentapi`` command."""

import sys

from agentapi.cli import main

sys.exit(main())
