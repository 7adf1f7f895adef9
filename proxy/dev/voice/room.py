"""What the engine stand-in emits and records: room messages (CONTRACT §4), signed server
callbacks (§5), and the per-round results with their latency table.

Room messages are the cmdID 1 custom messages a client app receives (plus the cmdID 2
messages the simulated client sends, so a transcript reads in order); ``RoomLog`` keeps
them and prints each as one JSON line. ``CallbackSender`` posts callbacks in order from
one background worker, so a slow receiver never stalls the conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp
import orjson

from proxy.dev.voice.tts import TTSResult
from proxy.voice.signing import sign

SUBTITLE, STATE, META_INFO, METRIC, ERROR = 10000, 10001, 10002, 10020, 10030
CLIENT_TEXT, CLIENT_INTERRUPT = 20000, 20001
LISTENING, THINKING, SPEAKING, INTERRUPTED, FINISHED = 1, 2, 3, 4, 5


def now_ms() -> int:
    return int(time.time() * 1000)


def clock_text(seconds: float) -> str:
    """Session time as the subtitles' "HH:MM:SS"."""
    whole = max(int(seconds), 0)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def subtitle(
    sender: str, text: str, roundid: str, start_s: float, end_s: float, end: bool
) -> dict[str, Any]:
    payload = {
        "text": text,
        "start_time": clock_text(start_s),
        "end_time": clock_text(end_s),
        "roundid": roundid,
        "end": end,
    }
    return {"type": SUBTITLE, "sender": sender, "receiver": [], "payload": payload}


def state(sender: str, roundid: str, value: int) -> dict[str, Any]:
    payload = {"roundid": roundid, "timestamp": now_ms(), "state": value}
    return {"type": STATE, "sender": sender, "receiver": [], "payload": payload}


def meta_info(sender: str, roundid: str, metainfo: Any) -> dict[str, Any]:
    return {
        "type": META_INFO,
        "sender": sender,
        "receiver": [],
        "roundid": roundid,
        "payload": metainfo,
    }


def metric(sender: str, name: str, value: float, roundid: str) -> dict[str, Any]:
    payload = {"metric": name, "value": round(value), "tag": {"roundid": roundid}}
    return {"type": METRIC, "sender": sender, "receiver": [], "payload": payload}


def error(sender: str, name: str, code: int, message: str, roundid: str) -> dict[str, Any]:
    payload = {"metric": name, "tag": {"roundid": roundid, "code": code, "message": message}}
    return {"type": ERROR, "sender": sender, "receiver": [], "payload": payload}


def sentence(user_id: str, text: str, start_ms: int, roundid: str) -> dict[str, Any]:
    """A 903 payload: a complete sentence (the user's, or the LLM's whole reply)."""
    return {
        "UserId": user_id,
        "Text": text,
        "StartTimeMs": start_ms,
        "EndTimeMs": now_ms(),
        "RoundId": roundid,
    }


def client_text(sender: str, bot: str, message: str) -> dict[str, Any]:
    payload = {"id": str(uuid.uuid4()), "message": message, "timestamp": now_ms()}
    return {"type": CLIENT_TEXT, "sender": sender, "receiver": [bot], "payload": payload}


def client_interrupt(sender: str, bot: str) -> dict[str, Any]:
    payload = {"id": str(uuid.uuid4()), "timestamp": now_ms()}
    return {"type": CLIENT_INTERRUPT, "sender": sender, "receiver": [bot], "payload": payload}


class RoomLog:
    """Every room message of a session, printed as JSON lines to ``out`` when given."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out
        self.messages: list[dict[str, Any]] = []

    def emit(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if self.out is not None:
            self.out.write(orjson.dumps(message).decode() + "\n")
            self.out.flush()


TABLE_HEADER = ("round", "net ms", "first ms", "total ms", "recv", "spoken", "intr", "retries")


def format_table(rows: Iterable[Sequence[Any]]) -> str:
    """The latency table: one row per round, ``None`` shown as ``-``."""
    cells = [list(TABLE_HEADER)]
    for row in rows:
        cells.append(
            ["-" if v is None else str(round(v) if isinstance(v, float) else v) for v in row]
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_HEADER))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    return "\n".join(lines) + "\n"


class EventClock:
    """EventMsTs: wall-clock milliseconds, strictly increasing within a task."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(now_ms(), self._last + 1)
        return self._last


@dataclass(slots=True)
class CallbackRecord:
    """One server callback: its body, and how its delivery went."""

    event_type: int
    body: dict[str, Any]  # CallbackTs is filled in when it is first sent
    raw: bytes = b""  # the exact bytes signed and sent
    delivered: bool = False
    status: int | None = None
    attempts: int = 0
    error: str | None = None
    done: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.body["EventInfo"]["Payload"])


def callback_body(
    event_type: int,
    event_ms: int,
    task_id: str,
    room_id: str,
    room_id_type: str,
    payload: dict[str, Any],
) -> dict[str, Any]:
    room_type: int | str = int(room_id_type) if room_id_type.isdigit() else room_id_type
    info = {
        "EventMsTs": event_ms,
        "TaskId": task_id,
        "RoomId": room_id,
        "RoomIdType": room_type,
        "Payload": payload,
    }
    return {"EventGroupId": 9, "EventType": event_type, "CallbackTs": 0, "EventInfo": info}


class CallbackSender:
    """Posts callbacks one at a time, in order; a failure is recorded, never raised."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str | None,
        key: str,
        sdk_app_id: str,
        retries: int = 1,
        timeout_s: float = 5.0,
    ) -> None:
        self.http, self.url, self.key, self.sdk_app_id = http, url, key, sdk_app_id
        self.retries, self.timeout_s = retries, timeout_s
        self.records: list[CallbackRecord] = []
        self._queue: asyncio.Queue[CallbackRecord] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def submit(self, record: CallbackRecord) -> asyncio.Future[None]:
        """Queue ``record``; the returned future resolves once it is delivered or given up."""
        record.done = asyncio.get_running_loop().create_future()
        self.records.append(record)
        self._queue.put_nowait(record)
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        return record.done

    async def flush(self, limit_s: float) -> None:
        """Wait up to ``limit_s`` for what is queued now to be delivered (or given up)."""
        pending = [r.done for r in self.records if r.done is not None and not r.done.done()]
        if pending:
            await asyncio.wait(pending, timeout=limit_s)

    async def drain(self) -> None:
        """Wait for everything queued, then stop the worker."""
        await asyncio.gather(*(r.done for r in self.records if r.done is not None))
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def _run(self) -> None:
        while True:
            record = await self._queue.get()
            try:
                await self._deliver(record)
            except Exception as exc:  # never let a callback break the session
                record.error = f"{type(exc).__name__}: {exc}"
            finally:
                if record.done is not None and not record.done.done():
                    record.done.set_result(None)

    async def _deliver(self, record: CallbackRecord) -> None:
        record.body["CallbackTs"] = now_ms()
        record.raw = orjson.dumps(record.body)
        if not self.url:
            return
        headers = {
            "Content-Type": "application/json",
            "Sign": sign(self.key, record.raw),
            "SdkAppId": self.sdk_app_id,
        }
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        for _ in range(1 + self.retries):  # the engine retries at once after a failure
            record.attempts += 1
            try:
                async with self.http.post(
                    self.url, data=record.raw, headers=headers, timeout=timeout
                ) as response:
                    await response.read()
                    record.status = response.status
                    if response.status == 200:
                        record.delivered, record.error = True, None
                        return
                    record.error = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                record.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass(slots=True)
class RoundResult:
    """One user turn and the bot's reply, as the engine saw it."""

    roundid: str
    kind: str  # "say" | "text"
    user_text: str
    request_id: str
    request_ids: list[str] = field(default_factory=list)  # X-Request-Id of each attempt
    received_text: str = ""  # everything the LLM sent (what the engine keeps as history)
    spoken_text: str = ""  # what the user heard: 905's Text
    completed: bool = False  # the stream reached [DONE]
    interrupted: bool = False
    interrupted_by: str | None = None  # "speech" (barge-in) | "client" (20001)
    retries: int = 0
    network_ms: float | None = None  # llm_network_latency: to the response headers
    first_token_ms: float | None = None  # llm_first_token
    total_ms: float | None = None  # first request sent -> stream finished or abandoned
    metainfo: list[Any] = field(default_factory=list)
    error_code: int | None = None
    error_message: str | None = None
    tts: TTSResult | None = None

    def table_row(self) -> tuple[Any, ...]:
        return (
            self.roundid[:8],
            self.network_ms,
            self.first_token_ms,
            self.total_ms,
            len(self.received_text),
            len(self.spoken_text),
            "yes" if self.interrupted else "no",
            self.retries,
        )


@dataclass(slots=True)
class SessionResult:
    task_id: str
    rounds: list[RoundResult]
    messages: list[dict[str, Any]]  # room messages in order
    callbacks: list[CallbackRecord]

    @property
    def ok(self) -> bool:
        return all(r.error_code is None for r in self.rounds)

    def of_type(self, message_type: int) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == message_type]

    def events(self, event_type: int) -> list[CallbackRecord]:
        return [c for c in self.callbacks if c.event_type == event_type]

    def table(self) -> str:
        return format_table(r.table_row() for r in self.rounds)
