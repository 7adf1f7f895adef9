"""Engine history as evidence of what the user heard.

With ``History > 0`` the engine re-sends earlier rounds. An assistant message it sends
that is a strict beginning of the reply the proxy stored (spacing and punctuation
aside) says the user heard only that much: the stored reply is cut to it and marked
``interrupted``, as a 905 would have done. It never adds a second copy: the cut reply
then matches the request's message, which the prompt assembly drops as a repeat.

Which stored reply a request message speaks of: the one that follows the newest stored
user message with the same text as the user message before it in the request.
"""

from __future__ import annotations

from typing import Any

from proxy.context.history import StoredMessage
from proxy.context.matching import content_text, normalise
from proxy.voice.spoken import SpokenFix, reply_groups, spoken_fixes


def heard_cuts(earlier: list[dict[str, Any]], stored: list[StoredMessage]) -> list[SpokenFix]:
    """The changes the request's earlier rounds make to the stored replies."""
    fixes: list[SpokenFix] = []
    asked: str | None = None
    for message in earlier:
        role = message.get("role")
        if role == "user":
            asked = normalise(content_text(message.get("content")))
            continue
        if role != "assistant" or not asked:
            continue
        text = content_text(message.get("content"))
        group = _reply_to(asked, stored)
        asked = None  # one reply per user message
        if group is None:
            continue
        said = normalise("".join(content_text(m.content) for m in group))
        heard = normalise(text)
        if not heard or said == heard or not said.startswith(heard):
            continue
        candidate = spoken_fixes(group, text)
        if candidate is not None:
            fixes.extend(fix for fix in candidate if fix.changed)
    return fixes


def apply_in_place(fixes: list[SpokenFix]) -> None:
    """The loaded history as it is once ``fixes`` are stored."""
    for fix in fixes:
        fix.message.content, fix.message.interrupted = fix.content, fix.interrupted


def _reply_to(asked: str, stored: list[StoredMessage]) -> list[StoredMessage] | None:
    """The reply group right after the newest stored user message saying ``asked``."""
    for index in range(len(stored) - 1, -1, -1):
        message = stored[index]
        if message.role == "user" and normalise(content_text(message.content)) == asked:
            after = stored[index + 1 :]
            end = next((i for i, m in enumerate(after) if m.role == "user"), len(after))
            groups = reply_groups(after[:end])
            return groups[0] if groups else None
    return None
