"""Reading a streamed summary: the text of choice 0, an error event fails the summary."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import orjson
import pytest

from proxy.context.summary import streamed_text
from proxy.errors import UpstreamError


class Stream:
    """A ``CompletionStream`` over fixed events (the router's contract, no upstream)."""

    def __init__(self, first: list[bytes], *later: list[bytes]) -> None:
        self.first_events = first
        self.waited = 0.0
        self._later = later

    async def batches(self) -> AsyncGenerator[list[bytes], None]:
        for batch in self._later:
            yield batch

    def close(self) -> None:
        pass


def delta(content: str | None, index: int = 0) -> bytes:
    return orjson.dumps({"choices": [{"index": index, "delta": {"content": content}}]})


async def test_the_text_is_every_delta_of_the_stream_in_order() -> None:
    usage = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 9}})
    stream = Stream(
        [orjson.dumps({"choices": [{"delta": {"role": "assistant"}}]}), delta("Ana ")],
        [delta("plans "), delta(None)],
        [delta("a trip."), usage, b"[DONE]"],
    )
    assert await streamed_text(stream) == "Ana plans a trip."


async def test_an_error_event_fails_the_summary() -> None:
    stream = Stream([delta("Ana ")], [orjson.dumps({"error": {"message": "overloaded"}})])
    with pytest.raises(UpstreamError):
        await streamed_text(stream)
