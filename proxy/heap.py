"""The garbage collector's pauses, kept short: the proxy's loop serves every stream.

A full (generation 2) collection walks every tracked object and stops the event loop
while it does. After start-up about 150,000 objects (the imported modules, FastAPI's
routes, pydantic's validators) live for the life of the process; walked again at every
full collection, they made pauses of 70 ms on a quiet core and up to 0.7 s on a busy
one (200 soak sessions on 2 cores), long enough for every Redis call in flight to miss
its ``PROXY_REDIS_TIMEOUT_MS`` time box. ``gc.freeze()`` moves them out of the
collector's sight once the application is built; a larger first-generation threshold makes young
collections, and so the promotions that lead to full ones, rarer.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # allocations between young collections (CPython's default: 700)


def freeze_startup_heap() -> None:
    """Called once the application is built: what exists now is kept for good."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
