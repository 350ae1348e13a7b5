"""The garbage collector's policy for a serving process.

A full (generation 2) collection walks every tracked object. After start-up
most of them are the process's furniture: modules, SQLAlchemy mappings and
compiled statements, protobuf descriptors, the FastAPI app. With ~1 M of
them a full collection took 50-130 ms here under 25 streams (measured with
gc.callbacks, issue 16's capacity regression): every stream then saw a gap
of that length. Freezing what exists once serving begins moves it to the
permanent generation, so a full collection walks only what requests made.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_heap() -> int:
    """Collects once, then freezes every surviving object (``gc.freeze``).
    Returns how many objects were frozen. Call it once, when start-up is over."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("froze %d start-up objects out of the collector's reach", frozen)
    return frozen
