"""What the mock upstream records of each chat request (the recording API tests read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.dev.mock.behaviour import MockBehaviour


class Headers(dict[str, str]):
    """Header names as the client sent them; lookups ignore case, as HTTP does."""

    def _actual(self, key: str) -> str:
        if super().__contains__(key):
            return key
        return next((k for k in self if k.lower() == key.lower()), key)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(self._actual(key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(self._actual(key))

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(self._actual(key), default)


@dataclass(slots=True)
class RecordedRequest:
    """One chat request as the mock saw it, and how it ended."""

    index: int
    path: str
    scenario: dict[str, str]
    headers: Headers
    body: Any
    behaviour: MockBehaviour
    started_at: float  # time.monotonic()
    # in_progress | completed | client_closed | error_status | failed_mid_stream | server_stopped
    outcome: str = "in_progress"
    ended_at: float | None = None
    cached_tokens: int | None = None  # what the prompt cache reported (answered requests)
    query: dict[str, str] = field(default_factory=dict)  # the URL's query parameters
