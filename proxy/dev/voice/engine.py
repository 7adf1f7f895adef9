"""``proxy engine``: a stand-in for the TRTC Conversational AI engine.

It drives a conversation against any OpenAI-compatible chat-completions URL the way the
engine does (CONTRACT §1-§6): the engine's headers and body, its own ``History`` of full
replies, the first-token ``Timeout`` with one retry under the same X-Request-Id, a speech
clock that decides what the user actually heard when they barge in, room messages as
JSON lines, signed server callbacks and an optional custom TTS leg.

The speech clock is virtual unless ``realtime``: speech that would outlast the stream is
not waited for, but everything that depends on the network (the stream itself, an
interruption while it is still arriving) happens in real time.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp

from proxy.dev.voice import room
from proxy.dev.voice.llm_stream import LLMStream
from proxy.dev.voice.room import (
    CallbackRecord,
    CallbackSender,
    EventClock,
    RoomLog,
    RoundResult,
    SessionResult,
)
from proxy.dev.voice.script import (
    ClientInterrupt,
    EngineConfig,
    ScriptError,
    Turn,
    fold_turns,
    parse_args,
    parse_turn,
    turn_source,
)
from proxy.dev.voice.tts import synthesize

__all__ = ["EngineConfig", "RoundResult", "SessionResult", "Turn", "main", "run_session"]

LLM_TIMEOUT, LLM_RATE_LIMITED, LLM_FAILED = 30200, 30201, 30202
TurnInput = Turn | ClientInterrupt | Mapping[str, Any] | str


@dataclass(slots=True)
class _Reply:
    """What one attempt received, with arrival times, for the speech clock."""

    started: float
    first_at: float | None = None
    first_ms: int = 0  # wall clock at the first token
    start_s: float = 0.0  # session time (with skipped speech) at the first token
    text: str = ""
    reached: list[tuple[float, int]] = field(default_factory=list)  # (arrival, total length)
    end_at: float | None = None
    interrupt_at: float | None = None
    error: tuple[int, str] | None = None


@dataclass(slots=True)
class _Plan:
    """If and when the user cuts this reply short."""

    after_ms: float | None = None  # after the first token
    at_chars: int | None = None  # once this many characters were spoken
    by_speech: bool = True  # a barge-in (904) rather than a client 20001

    @classmethod
    def for_turn(cls, turn: Turn, config: EngineConfig) -> _Plan:
        if turn.interrupt_after_ms is not None or turn.interrupt_at_chars is not None:
            return cls(turn.interrupt_after_ms, turn.interrupt_at_chars)
        if turn.client_interrupt_after_ms is not None or turn.client_interrupt_at_chars is not None:
            if turn.client_interrupt_at_chars is not None:
                return cls(None, turn.client_interrupt_at_chars, by_speech=False)
            return cls(turn.client_interrupt_after_ms, None, by_speech=False)
        return cls(config.interrupt_after_ms)

    def time(self, reply: _Reply, cps: float) -> float | None:
        """When the interruption happens given what has arrived (None: not, or not yet)."""
        if reply.first_at is None:
            return None
        if self.after_ms is not None:
            return reply.first_at + self.after_ms / 1000
        if self.at_chars is not None:
            for arrived, length in reply.reached:  # speech can never run ahead of the text
                if length >= self.at_chars:
                    return max(reply.first_at + self.at_chars / cps, arrived)
        return None


def _partial(text: str) -> str:
    """About the first half of a sentence, in words when it has spaces."""
    words = text.split()
    if len(words) > 1:
        return " ".join(words[: len(words) // 2])
    return text[: len(text) // 2]


def spoken_chars(reply: _Reply, at: float, cps: float) -> int:
    """The speech clock: characters (CJK ones count one each) spoken by ``at``."""
    if reply.first_at is None:
        return 0
    return max(0, min(len(reply.text), math.floor((at - reply.first_at) * cps + 1e-6)))


class _Session:
    def __init__(self, config: EngineConfig, http: aiohttp.ClientSession, out: TextIO | None):
        self.config, self.http = config, http
        self.room = RoomLog(out)
        self.callbacks = CallbackSender(
            http,
            config.callback_url,
            config.callback_key,
            config.sdk_app_id,
            config.callback_retries,
            config.callback_timeout_s,
        )
        self.clock = EventClock()
        self.rounds: list[RoundResult] = []
        self.history: list[tuple[str, str]] = []  # (user text, FULL reply) as the engine keeps
        self.started = time.monotonic()
        self.skipped_s = 0.0  # speech time the virtual clock did not wait for
        self.next_roundid: str | None = None  # set when a barge-in already started a round

    # -- outputs -----------------------------------------------------------------------

    def callback(self, event_type: int, payload: dict[str, Any]) -> asyncio.Future[None]:
        c = self.config
        body = room.callback_body(
            event_type, self.clock.next(), c.task_id, c.room_id, c.room_id_type, payload
        )
        return self.callbacks.submit(CallbackRecord(event_type, body))

    def state(self, rnd: RoundResult, value: int) -> None:
        self.room.emit(room.state(self.config.bot_id, rnd.roundid, value))

    def metric(self, rnd: RoundResult, name: str, value_ms: float) -> None:
        self.room.emit(room.metric(self.config.bot_id, name, value_ms, rnd.roundid))
        tag = {"RoundId": rnd.roundid}
        self.callback(906, {"Metric": name, "Value": round(value_ms), "Tag": tag})

    def error(self, rnd: RoundResult, name: str, code: int, message: str) -> None:
        self.room.emit(room.error(self.config.bot_id, name, code, message, rnd.roundid))
        tag = {"RoundId": rnd.roundid, "Code": code, "Message": message}
        self.callback(908, {"Metric": name, "Tag": tag})

    def session_s(self, at: float | None = None) -> float:
        return (time.monotonic() if at is None else at) - self.started + self.skipped_s

    # -- the request -------------------------------------------------------------------

    def headers(self, request_id: str) -> dict[str, str]:
        c = self.config
        headers = {
            "Content-Type": "application/json",
            "X-Task-Id": c.task_id,
            "X-Request-Id": request_id,
            "X-Sdk-App-Id": c.sdk_app_id,
            "X-User-Id": c.user_id,
            "X-Room-Id": c.room_id,
            "X-Room-Id-Type": c.room_id_type,
        }
        if c.api_key:
            headers["Authorization"] = f"Bearer {c.api_key}"
        return headers

    def body(self, turn: Turn) -> dict[str, Any]:
        c = self.config
        messages: list[dict[str, Any]] = []
        if c.system_prompt:
            messages.append({"role": "system", "content": c.system_prompt})
        messages += [dict(m) for m in c.user_messages]
        for user_text, reply in self.history[-c.history :] if c.history else []:
            messages += [{"role": "user", "content": user_text}]
            messages += [{"role": "assistant", "content": reply}]
        messages.append({"role": "user", "content": turn.text})
        body: dict[str, Any] = {"model": c.model, "messages": messages, "stream": c.streaming}
        for key, value in (
            ("max_tokens", c.max_tokens),
            ("temperature", c.temperature),
            ("top_p", c.top_p),
        ):
            if value is not None:
                body[key] = value
        if c.meta_info is not None:
            # The seed only says MetaInfo is "placed in the request body", not where: that is
            # ambiguous. We send it nested as "MetaInfo"; the proxy accepts top-level or nested.
            body["MetaInfo"] = dict(c.meta_info)
        if turn.mock:
            body["mock"] = dict(turn.mock)  # drives the mock upstream; others ignore it
        return body

    # -- a round -----------------------------------------------------------------------

    async def run_turn(self, turn: Turn) -> RoundResult:
        c = self.config
        if turn.wait_ms:
            await asyncio.sleep(turn.wait_ms / 1000)
        # A next sentence takes the engine at least VadSilenceTime (default 1 s) to recognise,
        # so the last round's callbacks (905 above all) reach the backend before its request.
        # The virtual clock does not wait that out, but lets what was sent arrive first.
        await self.callbacks.flush(c.vad_silence_s)
        speech_started = self.next_roundid is not None
        roundid, self.next_roundid = self.next_roundid or str(uuid.uuid4()), None
        rnd = RoundResult(roundid, turn.kind, turn.text, request_id=str(uuid.uuid4()))
        self.rounds.append(rnd)
        if turn.kind == "say":  # recognised speech: 904, the final subtitle, 903
            started_ms = room.now_ms()
            self.state(rnd, room.LISTENING)
            if not speech_started:
                self.callback(904, {"UserId": c.user_id, "RoundId": roundid})
            now_s = self.session_s()
            for text, end in ((_partial(turn.text), False), (turn.text, True)):
                if text:  # an STT hypothesis first, then the complete sentence
                    self.room.emit(room.subtitle(c.user_id, text, roundid, now_s, now_s, end))
            self.callback(903, room.sentence(c.user_id, turn.text, started_ms, roundid))
        else:  # a client 20000 text message skips STT: no 904, no 903
            self.room.emit(room.client_text(c.user_id, c.bot_id, turn.text))
        self.state(rnd, room.THINKING)
        await self.converse(rnd, turn, _Plan.for_turn(turn, c))
        if rnd.received_text:
            self.history.append((turn.text, rnd.received_text))
            del self.history[:-50]  # History is at most 50 rounds
        if c.tts_url and rnd.spoken_text:
            await self.speak_audio(rnd, c.tts_url)
        return rnd

    async def converse(self, rnd: RoundResult, turn: Turn, plan: _Plan) -> None:
        c = self.config
        body, headers = self.body(turn), self.headers(rnd.request_id)
        round_started = time.monotonic()
        while True:
            rnd.request_ids.append(rnd.request_id)  # a retry carries the same id
            stream = LLMStream(self.http, c.url, headers, body)
            reply = _Reply(stream.started)
            try:
                outcome = await self.consume(stream, rnd, reply, plan)
                if outcome == "interrupted":  # mid-stream: the stream is still open here
                    at = reply.interrupt_at or time.monotonic()
                    rnd.spoken_text = reply.text[: spoken_chars(reply, at, c.chars_per_second)]
                    if c.callback_order == "before":
                        await self.interrupted(rnd, reply, plan, wait=True)
                    await stream.close()
                    rnd.total_ms = (time.monotonic() - round_started) * 1000
                    if c.callback_order == "after":
                        await self.interrupted(rnd, reply, plan)
            finally:
                await stream.close()
            if outcome != "timeout" or rnd.retries >= c.retries:
                break
            rnd.retries += 1
        rnd.received_text = reply.text
        if outcome == "interrupted":
            return
        rnd.total_ms = (time.monotonic() - round_started) * 1000
        if outcome == "timeout":
            reply.error = (LLM_TIMEOUT, f"no first token within {c.timeout_s:g} s")
        if reply.error is not None:
            rnd.error_code, rnd.error_message = reply.error
            self.error(rnd, "llm_error", *reply.error)
        if outcome == "completed":
            rnd.completed = True
            self.callback(903, room.sentence(c.bot_id, reply.text, reply.first_ms, rnd.roundid))
        if reply.text:
            await self.play(rnd, reply, plan)

    async def consume(self, stream: LLMStream, rnd: RoundResult, reply: _Reply, plan: _Plan) -> str:
        """Read one attempt until it ends: completed | truncated | error | stalled |
        timeout (no first token in time) | interrupted (the user cut in mid-stream)."""
        c = self.config
        last = reply.started
        while True:
            interrupt_at = plan.time(reply, c.chars_per_second)
            if reply.first_at is None:
                deadline = reply.started + c.timeout_s
            else:
                deadline = last + c.stall_timeout_s
                if interrupt_at is not None:
                    deadline = min(deadline, interrupt_at)
            event = await stream.next(deadline)
            if event is None:
                if reply.first_at is None:
                    return "timeout"
                if interrupt_at is not None and interrupt_at <= deadline:
                    reply.interrupt_at = interrupt_at
                    return "interrupted"
                reply.error = (LLM_TIMEOUT, f"the stream stalled for {c.stall_timeout_s:g} s")
                return "stalled"
            last = event.at
            if event.kind == "headers":
                rnd.network_ms = (event.at - reply.started) * 1000
                self.metric(rnd, "llm_network_latency", rnd.network_ms)
            elif event.kind == "content":
                if reply.first_at is None:
                    reply.first_at, reply.first_ms = event.at, room.now_ms()
                    reply.start_s = self.session_s(event.at)
                    rnd.first_token_ms = (event.at - reply.started) * 1000
                    self.metric(rnd, "llm_first_token", rnd.first_token_ms)
                    self.state(rnd, room.SPEAKING)
                reply.text += event.data
                reply.reached.append((event.at, len(reply.text)))
            elif event.kind == "meta":
                rnd.metainfo.append(event.data)
                self.room.emit(room.meta_info(c.bot_id, rnd.roundid, event.data))
            elif event.kind == "stream_error":  # the proxy's in-stream error; [DONE] follows
                reply.error = (LLM_FAILED, str(event.data))
            elif event.kind == "http_error":
                status, message = event.data
                code = LLM_RATE_LIMITED if status == 429 else LLM_FAILED
                reply.error = (code, f"LLM HTTP {status}: {message}")
                return "error"
            elif event.kind == "error":
                reply.error = (LLM_FAILED, f"LLM request failed: {event.data}")
                return "error"
            else:  # done | eof
                reply.end_at = event.at
                if event.kind == "eof":
                    reply.error = reply.error or (LLM_FAILED, "the stream ended without [DONE]")
                    return "truncated"
                return "completed"

    async def play(self, rnd: RoundResult, reply: _Reply, plan: _Plan) -> None:
        """The stream is over; let the speech clock run to the end or to an interruption."""
        cps, full = self.config.chars_per_second, reply.text
        first_at = reply.first_at or reply.started
        speech_end = max(reply.end_at or time.monotonic(), first_at + len(full) / cps)
        interrupt_at = plan.time(reply, cps)
        if (
            interrupt_at is not None
            and interrupt_at < speech_end
            and spoken_chars(reply, interrupt_at, cps) < len(full)
        ):
            await self.wait_until(interrupt_at)
            reply.interrupt_at = interrupt_at
            rnd.spoken_text = full[: spoken_chars(reply, interrupt_at, cps)]
            await self.interrupted(rnd, reply, plan)
            return
        await self.wait_until(speech_end)
        rnd.spoken_text = full
        self.subtitle(rnd, reply)
        self.state(rnd, room.FINISHED)
        self.callback(905, {"UserId": self.config.bot_id, "RoundId": rnd.roundid, "Text": full})

    async def wait_until(self, at: float) -> None:
        pending = at - time.monotonic()
        if pending <= 0:
            return
        if self.config.realtime:
            await asyncio.sleep(pending)
        else:
            self.skipped_s += pending

    def subtitle(self, rnd: RoundResult, reply: _Reply) -> None:
        end_s = reply.start_s + len(rnd.spoken_text) / self.config.chars_per_second
        bot, text = self.config.bot_id, rnd.spoken_text
        self.room.emit(room.subtitle(bot, text, rnd.roundid, reply.start_s, end_s, True))

    async def interrupted(
        self, rnd: RoundResult, reply: _Reply, plan: _Plan, *, wait: bool = False
    ) -> None:
        c = self.config
        rnd.interrupted, rnd.interrupted_by = True, "speech" if plan.by_speech else "client"
        if not plan.by_speech:
            self.room.emit(room.client_interrupt(c.user_id, c.bot_id))
        self.state(rnd, room.INTERRUPTED)
        at, first_at = reply.interrupt_at or time.monotonic(), reply.first_at or reply.started
        self.metric(rnd, "interruption", (at - first_at) * 1000)
        if plan.by_speech:  # the user's new utterance starts the next round
            self.next_roundid = str(uuid.uuid4())
            self.callback(904, {"UserId": c.user_id, "RoundId": self.next_roundid})
        self.subtitle(rnd, reply)
        payload = {"UserId": c.bot_id, "RoundId": rnd.roundid, "Text": rnd.spoken_text}
        delivered = self.callback(905, payload)
        if wait:
            await delivered

    async def speak_audio(self, rnd: RoundResult, url: str) -> None:
        c = self.config
        result = await synthesize(
            self.http,
            url,
            api_key=c.tts_key,
            headers=self.headers(rnd.request_id),
            text=rnd.spoken_text,
            roundid=rnd.roundid,
            audio_dir=c.audio_dir,
            fmt=c.tts_format,
            sample_rate=c.tts_sample_rate,
            timeout_s=c.tts_timeout_s,
        )
        rnd.tts = result
        if result.error_code is not None:
            self.error(rnd, "tts_error", result.error_code, result.error_message or "")
            return
        if result.network_ms is not None:
            self.metric(rnd, "tts_network_latency", result.network_ms)
        if result.first_frame_ms is not None:
            self.metric(rnd, "tts_first_frame_latency", result.first_frame_ms)

    # -- the session -------------------------------------------------------------------

    async def run(
        self,
        turns: Iterable[Turn] | AsyncIterable[TurnInput],
        on_round: Callable[[RoundResult], None] | None,
    ) -> None:
        self.callback(901, {"Status": 0})
        self.callback(909, {"Status": "session_ready"})
        leave_code = 98  # internal error, unless the script runs to its end
        try:
            async for turn in _turns(turns):
                result = await self.run_turn(turn)
                if on_round is not None:
                    on_round(result)
            leave_code = 0
        finally:
            self.callback(902, {"LeaveCode": leave_code})
            await self.callbacks.drain()


async def _turns(source: Iterable[Turn] | AsyncIterable[TurnInput]) -> AsyncIterable[Turn]:
    if not isinstance(source, AsyncIterable):
        for turn in source:
            yield turn
        return
    async for item in source:
        parsed = parse_turn(item)
        if isinstance(parsed, Turn):
            yield parsed
        else:  # a live 20001 arrives after the reply it was meant for has finished
            print("engine: an interrupt only applies inside a script; ignored", file=sys.stderr)


async def run_session(
    config: EngineConfig,
    turns: Iterable[TurnInput] | AsyncIterable[TurnInput],
    *,
    out: TextIO | None = None,
    on_round: Callable[[RoundResult], None] | None = None,
) -> SessionResult:
    """Run one engine session (one task) over ``turns``; room messages go to ``out``."""
    source: Iterable[Turn] | AsyncIterable[TurnInput] = (
        turns if isinstance(turns, AsyncIterable) else fold_turns(turns)
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        session = _Session(config, http, out)
        await session.run(source, on_round)
    return SessionResult(
        config.task_id, session.rounds, session.room.messages, session.callbacks.records
    )


def main(argv: list[str] | None = None) -> int:
    """``proxy engine ...``: 0 when every round got a reply, 1 on LLM errors, 2 on bad input."""
    try:
        options = parse_args(argv)
        config, turns = options.config, turn_source(options)
    except ScriptError as exc:
        print(f"proxy engine: {exc}", file=sys.stderr)
        return 2
    show_bot = options.interactive

    def on_round(result: RoundResult) -> None:
        if show_bot:
            print(f"bot> {result.spoken_text or result.error_message or ''}", file=sys.stderr)

    try:
        result = asyncio.run(
            run_session(config, turns, out=None if options.quiet else sys.stdout, on_round=on_round)
        )
    except KeyboardInterrupt:
        return 130
    table = result.table()
    (sys.stdout if options.table else sys.stderr).write(table)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
