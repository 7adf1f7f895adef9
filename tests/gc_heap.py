"""The test process's garbage collector: a frozen heap, and its longest pauses.

Every in-process proxy, the mock upstream and the test share one interpreter: a full
collection holds the GIL and stalls them all at once. The client libraries the suite
drives (LiveKit, LlamaIndex, LangChain, Pipecat) make the heap large: full collections
took 0.35-0.6 s in ``tests/clients`` plus ``tests/gateway``, enough, on a slower
machine, to miss the voice defaults (1.5 s to the first token) mid-test. As the server
does (``proxy.heap``), what is alive when a test module starts is frozen (after a
collection, between tests), so that the collections during tests walk only what the
tests make. The summary after the run says how long the pauses during tests were.
"""

from __future__ import annotations

import gc
import heapq
import time

import pytest

SHOWN = 5
LONG_PAUSE_S = 0.5

_started: float | None = None
_current: str | None = None  # the test running; None before the first (collection)
_module: object = None
_freezing = False  # our own collection between tests: not a pause during one
_longest: list[tuple[float, int, str]] = []  # a min-heap of (seconds, generation, test)
_long_pauses = 0


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _started, _long_pauses
    if _freezing or _current is None:
        return
    if phase == "start":
        _started = time.perf_counter()
        return
    if _started is None:
        return
    pause = time.perf_counter() - _started
    _started = None
    _long_pauses += pause >= LONG_PAUSE_S
    entry = (pause, int(info.get("generation", -1)), _current)
    if len(_longest) < SHOWN:
        heapq.heappush(_longest, entry)
    elif pause > _longest[0][0]:
        heapq.heapreplace(_longest, entry)


def _freeze() -> None:
    global _freezing
    _freezing = True
    try:
        gc.collect()  # garbage first: frozen objects are never collected
        gc.freeze()
    finally:
        _freezing = False


def pytest_configure(config: pytest.Config) -> None:
    gc.callbacks.append(_on_gc)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """The first test of each module: freeze what earlier modules and imports left."""
    global _module
    module = getattr(item, "module", None)
    if module is not _module:
        _module = module
        _freeze()


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    global _current
    _current = nodeid


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _longest:
        return
    terminalreporter.write_line(
        f"gc: {_long_pauses} pause(s) of {LONG_PAUSE_S} s or more during tests; the longest:"
    )
    for pause, generation, test in sorted(_longest, reverse=True):
        terminalreporter.write_line(f"  {pause * 1000:8.1f} ms  generation {generation}  {test}")
