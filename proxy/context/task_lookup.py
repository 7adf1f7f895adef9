"""Which task keys an engine's bare TaskId names: itself, or ``<app id>:<task id>``.

The engine's TaskId is unique within its app only; the proxy keys a task by its task
key (``proxy.call``). An operator who has only the TaskId needs the keys it
may stand for: the history stores list the live ones, the database the recorded ones.
"""

from __future__ import annotations

from proxy.call import valid_app_id

MAX_MATCHES = 50  # more than any real TaskId has; a listing stays bounded


def names_task(key: str, task_id: str) -> bool:
    """``key`` is ``task_id`` itself or ``<app id>:<task_id>`` for some app."""
    if key == task_id:
        return True
    app_id, colon, rest = key.partition(":")
    return bool(colon) and rest == task_id and valid_app_id(app_id) == app_id
