"""Incremental decoder for an upstream's Server-Sent Events stream.

Only ``data:`` fields matter for OpenAI-compatible streams; comments (keep-alive
pings such as ``: PROCESSING``), ``event:``, ``id:`` and ``retry:`` are dropped.
"""

from __future__ import annotations

DONE = b"[DONE]"
# Bytes searched for as ints: on Python 3.11, ``b"\r" in data`` first tries the needle as
# an int and raises and clears a TypeError, about eight times the cost of the search.
CR, LF = 13, 10


class SSEDecoder:
    """Feed raw bytes as they arrive; get back the data payload of each completed event."""

    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        if not self._buffer and not self._data and chunk[-2:] == b"\n\n" and CR not in chunk:
            # The usual read: whole ``data: ...`` events of one line each, taken apart at
            # half the line-by-line cost (this runs for every read of every stream).
            events = []
            for part in chunk[:-2].split(b"\n\n"):
                if part[:6] != b"data: " or LF in part:
                    return self._feed_lines(chunk)
                events.append(part[6:])
            return events
        return self._feed_lines(chunk)

    def _feed_lines(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        held = b""
        if CR in buffer:
            if buffer.endswith(b"\r"):  # maybe half a CRLF: decide when the next byte comes
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, rest = buffer.split(b"\n")
        self._buffer = rest + held
        events: list[bytes] = []
        for line in lines:
            if not line:  # a blank line ends the event
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
        return events

    def flush(self) -> list[bytes]:
        """Events left when the stream ends without a final blank line."""
        events = self.feed(b"\n\n") if self._buffer or self._data else []
        return events
