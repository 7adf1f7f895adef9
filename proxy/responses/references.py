"""``item_reference`` input items: an earlier response's message, named by its id.

With ``store`` on (the default), the Vercel AI SDK sends the assistant's earlier text
as ``{"type": "item_reference", "id": "msg_..."}`` instead of the text. A message item
id the proxy issues names the task and turn it came from (``msg_<turn>.<n>``, the same
``<turn>`` as the response id), so a reference is read back from that task's history:
the assistant text of that turn. Other references are refused (400).
"""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.access.catalog import Caller
from proxy.context.history import HistoryStore
from proxy.errors import InvalidRequest
from proxy.responses.ids import PREFIX, ResponseRef, parse_response_id

HISTORY_REACH = 200  # how far back in a task a referenced turn may be
MAX_REFERENCES = 64


async def resolve_references(
    body: dict[str, Any], caller: Caller, history: HistoryStore, wait_s: float
) -> None:
    """Replace each ``item_reference`` in ``body["input"]`` by the message it names."""
    items = body.get("input")
    if not isinstance(items, list):
        return
    positions = [
        i
        for i, item in enumerate(items)
        if isinstance(item, dict) and item.get("type") == "item_reference"
    ]
    if not positions:
        return
    if len(positions) > MAX_REFERENCES:
        raise InvalidRequest(f"at most {MAX_REFERENCES} item references", param="input")
    turns: dict[int, ResponseRef] = {i: _turn_of(items[i], i, caller) for i in positions}
    texts = await _texts({ref for ref in turns.values()}, history, wait_s)
    seen: set[ResponseRef] = set()
    resolved: list[Any] = []
    for index, item in enumerate(items):
        ref = turns.get(index)
        if ref is None:
            resolved.append(item)
            continue
        text = texts.get(ref)
        if text is None:
            raise _not_found(item.get("id"), index)
        if ref not in seen:  # a turn's text items hold its whole text: once
            seen.add(ref)
            resolved.append({"type": "message", "role": "assistant", "content": text})
    body["input"] = resolved


def _turn_of(item: dict[str, Any], index: int, caller: Caller) -> ResponseRef:
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id.startswith("msg_") or "." not in item_id:
        raise _not_found(item_id, index)
    turn = item_id[len("msg_") :].rsplit(".", 1)[0]
    try:
        ref = parse_response_id(PREFIX + turn, param=f"input.{index}.id")
    except InvalidRequest:
        raise _not_found(item_id, index) from None
    if caller.app_id and not ref.task_key.startswith(f"{caller.app_id}:"):
        raise _not_found(item_id, index)
    return ref


async def _texts(
    refs: set[ResponseRef], history: HistoryStore, wait_s: float
) -> dict[ResponseRef, str]:
    found: dict[ResponseRef, str] = {}
    for task_key in {ref.task_key for ref in refs}:
        try:
            async with asyncio.timeout(wait_s):
                stored = await history.load(task_key, HISTORY_REACH)
        except Exception:
            continue  # unreachable now: reported as not found
        for ref in (r for r in refs if r.task_key == task_key):
            parts = [
                m.content
                for m in stored.messages
                if m.request_id == ref.request_id
                and m.role == "assistant"
                and isinstance(m.content, str)
            ]
            if parts:
                found[ref] = "".join(parts)
    return found


def _not_found(item_id: Any, index: int) -> InvalidRequest:
    shown = item_id[:80] if isinstance(item_id, str) else item_id
    return InvalidRequest(
        f"Item with id {shown!r} not found: only message items of this proxy's stored "
        "responses can be referenced",
        param=f"input.{index}.id",
        code="item_not_found",
    )
