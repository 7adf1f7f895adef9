"""The mock's prompt cache: ``cached_tokens`` by longest common prefix, as upstreams do.

OpenAI, DeepSeek, vLLM and SGLang serve the longest already-seen prefix of a prompt
from cache and report it as ``usage.prompt_tokens_details.cached_tokens``. The mock
models that per conversation: a prompt is compared with the recent prompts that open
with the same first message (the system prompt), and the longest common prefix of their
rendered text counts, as that share of the prompt's tokens.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from typing import Any

RECENT_PER_PREFIX = 16  # prompts remembered per first message (concurrent conversations)
MAX_PREFIXES = 1024  # first messages remembered (least recently used go first)


def render_prompt(messages: Any) -> str:
    """The prompt as one text, in message order (what a prefix cache sees)."""
    parts: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if not isinstance(content, str):
            content = repr(content) if content is not None else ""
        calls = message.get("tool_calls")
        parts.append(f"<|{message.get('role')}|>{content}{calls or ''}<|end|>")
    return "".join(parts)


def common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search over C-speed comparisons)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


class PromptCache:
    """Bounded: ``MAX_PREFIXES`` x ``RECENT_PER_PREFIX`` prompts at most."""

    def __init__(self) -> None:
        self._recent: OrderedDict[str, deque[str]] = OrderedDict()

    def clear(self) -> None:
        self._recent.clear()

    def cached_tokens(self, messages: Any, prompt_tokens: int) -> int:
        """Of ``prompt_tokens``, those served from cache; the prompt is then remembered."""
        text = render_prompt(messages)
        first = messages[0] if isinstance(messages, list) and messages else None
        key = hashlib.sha1(render_prompt([first]).encode(), usedforsecurity=False).hexdigest()
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = deque(maxlen=RECENT_PER_PREFIX)
            if len(self._recent) > MAX_PREFIXES:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(key)
        best = max((common_prefix_length(text, seen) for seen in recent), default=0)
        recent.append(text)
        return prompt_tokens * best // len(text) if text else 0
