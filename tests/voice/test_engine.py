"""The engine stand-in (``proxy engine``) against the mock upstream used directly as its LLM.

Callbacks go to a small local receiver that checks every signature; TTS goes to a small
local aiohttp TTS server. Timing assertions are only generous sanity bounds.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from proxy.dev.mock.upstream import MockUpstreamThread
from proxy.dev.voice.engine import EngineConfig, SessionResult, run_session
from proxy.dev.voice.script import (
    ClientInterrupt,
    ScriptError,
    Turn,
    fold_turns,
    llm_config_fields,
    parse_args,
    parse_script_text,
)
from proxy.voice.signing import verify

KEY = "callbackKey123"
ALPHABET = "abcdefghijklmnopqrstuvwxyz"


class Receiver:
    """A business backend: records callbacks (verifying ``Sign``), can fail on purpose."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_next = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/callbacks", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/callbacks"
        return self

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"code": 1}, status=500)
        self.received.append(
            {
                "at": time.monotonic(),
                "headers": request.headers.copy(),
                "valid": verify(KEY, raw, request.headers.get("Sign")),
                "body": orjson.loads(raw),
            }
        )
        return web.json_response({"code": 0})

    def of(self, event_type: int) -> list[dict[str, Any]]:
        return [r["body"] for r in self.received if r["body"]["EventType"] == event_type]


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


def config(mock: MockUpstreamThread, receiver: Receiver | None = None, **fields: Any):
    fields.setdefault("timeout_s", 3.0)
    if receiver is not None:
        fields.setdefault("callback_url", receiver.url)
        fields.setdefault("callback_key", KEY)
    return EngineConfig(url=mock.base_url + "/chat/completions", **fields)


def alphabet(**extra: Any) -> dict[str, Any]:
    """A mock reply streamed one letter per chunk."""
    return {"reply": ALPHABET, "chunks": len(ALPHABET), **extra}


def payloads(result: SessionResult, event_type: int) -> list[dict[str, Any]]:
    return [c.payload for c in result.events(event_type)]


# -- the request ---------------------------------------------------------------------------


async def test_headers_and_body_shape(mock: MockUpstreamThread) -> None:
    cfg = config(
        mock,
        api_key="client-key",
        model="voice-model",
        system_prompt="You are a voice bot.",
        history=2,
        max_tokens=64,
        temperature=0.3,
        top_p=0.9,
        user_messages=[{"Role": "user", "Content": "My name is Ann."}],
        meta_info={"scene": "demo"},
        task_id="task-headers",
    )
    turns = [
        # interrupted after 3 characters: the engine still keeps the FULL reply as history
        {"say": "one", "mock": {"reply": "first reply"}, "interrupt_at_chars": 3},
        {"say": "two", "mock": {"reply": "second reply"}},
        {"text": "three", "mock": {"reply": "third reply"}},
        {"say": "four", "mock": {"reply": "fourth reply"}},
    ]
    result = await run_session(cfg, turns)
    assert [r.spoken_text for r in result.rounds] == [
        "fir",
        "second reply",
        "third reply",
        "fourth reply",
    ]
    requests = mock.requests
    assert len(requests) == 4
    request_ids = [r.headers["X-Request-Id"] for r in requests]
    assert len(set(request_ids)) == 4
    assert request_ids == [r.request_id for r in result.rounds]
    for request in requests:
        headers = request.headers
        assert headers["Authorization"] == "Bearer client-key"
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Task-Id"] == "task-headers"
        assert headers["X-Sdk-App-Id"] == "1400000001"
        assert headers["X-User-Id"] == "user-1"
        assert headers["X-Room-Id"] == "room-1"
        assert headers["X-Room-Id-Type"] == "1"
        body = request.body
        assert body["model"] == "voice-model"
        assert body["stream"] is True
        assert (body["max_tokens"], body["temperature"], body["top_p"]) == (64, 0.3, 0.9)
        assert body["MetaInfo"] == {"scene": "demo"}
    prefix = [
        {"role": "system", "content": "You are a voice bot."},
        {"role": "user", "content": "My name is Ann."},
    ]
    assert requests[0].body["messages"] == [*prefix, {"role": "user", "content": "one"}]
    assert requests[2].body["messages"] == [
        *prefix,
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first reply"},  # full, although only "fir" was heard
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "second reply"},
        {"role": "user", "content": "three"},
    ]
    assert requests[3].body["messages"][2:] == [  # History=2: only the last two rounds
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "second reply"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "third reply"},
        {"role": "user", "content": "four"},
    ]


async def test_history_zero_non_streaming(mock: MockUpstreamThread) -> None:
    cfg = config(mock, system_prompt="S", streaming=False)
    result = await run_session(cfg, ["hello", "again"])
    assert all(r.completed for r in result.rounds)
    assert mock.requests[1].body["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "again"},
    ]
    assert mock.requests[1].body["stream"] is False
    assert result.rounds[1].received_text.startswith("Reply to: again")


# -- timeouts and errors -------------------------------------------------------------------


async def test_timeout_then_retry_with_the_same_request_id(
    mock: MockUpstreamThread, receiver: Receiver
) -> None:
    mock.script([{"first_token_ms": 3000}, {}])
    started = time.monotonic()
    result = await run_session(config(mock, receiver, timeout_s=1), ["are you there"])
    assert time.monotonic() - started < 2.9  # the slow attempt was abandoned, not awaited
    (rnd,) = result.rounds
    assert rnd.retries == 1 and rnd.completed and rnd.error_code is None
    assert rnd.request_ids == [rnd.request_id, rnd.request_id]
    requests = mock.wait_for_requests(2)
    assert [r.headers["X-Request-Id"] for r in requests] == [rnd.request_id] * 2
    assert mock.wait_for_outcome(0).outcome == "client_closed"
    assert mock.wait_for_outcome(1).outcome == "completed"
    assert rnd.spoken_text.startswith("Reply to: are you there")
    assert not result.of_type(10030)


async def test_timeout_after_retries_is_error_30200(
    mock: MockUpstreamThread, receiver: Receiver
) -> None:
    result = await run_session(
        config(mock, receiver, timeout_s=1), [{"say": "hello", "mock": {"hang": True}}]
    )
    (rnd,) = result.rounds
    assert (rnd.retries, rnd.error_code) == (1, 30200)
    assert [m["payload"]["tag"]["code"] for m in result.of_type(10030)] == [30200]
    assert result.of_type(10030)[0]["payload"]["metric"] == "llm_error"
    assert [p["Tag"]["Code"] for p in payloads(result, 908)] == [30200]
    assert receiver.of(908)[0]["EventInfo"]["Payload"]["Metric"] == "llm_error"
    assert [mock.wait_for_outcome(i).outcome for i in (0, 1)] == ["client_closed"] * 2
    assert not result.ok and not payloads(result, 905)


async def test_rate_limit_is_30201_and_upstream_failure_30202(
    mock: MockUpstreamThread, receiver: Receiver
) -> None:
    turns = [{"say": "a", "mock": {"status": 429}}, {"say": "b", "mock": {"status": 503}}]
    result = await run_session(config(mock, receiver), turns)
    errors = [m["payload"]["tag"] for m in result.of_type(10030)]
    assert [e["code"] for e in errors] == [30201, 30202]
    assert "mock upstream status 503" in errors[1]["message"]  # the upstream's message, wrapped
    assert [e["roundid"] for e in errors] == [r.roundid for r in result.rounds]
    assert [p["Tag"]["Code"] for p in payloads(result, 908)] == [30201, 30202]
    assert [r.retries for r in result.rounds] == [0, 0]  # only timeouts are retried


# -- speech, interruption and meta.info ----------------------------------------------------


async def test_barge_in_mid_stream_uses_the_speech_clock(
    mock: MockUpstreamThread, receiver: Receiver
) -> None:
    turn = {"say": "tell me", "interrupt_after_ms": 500, "mock": alphabet(gap_ms=60)}
    result = await run_session(config(mock, receiver, chars_per_second=10), [turn, "next"])
    first, second = result.rounds
    assert first.interrupted and first.interrupted_by == "speech"
    assert first.spoken_text == "abcde"  # 10 chars/s for 500 ms
    assert 5 <= len(first.received_text) < len(ALPHABET)  # abandoned mid-stream
    assert ALPHABET.startswith(first.received_text)
    assert mock.wait_for_outcome(0).outcome == "client_closed"
    spoken = [p for p in payloads(result, 905) if p["RoundId"] == first.roundid]
    assert spoken == [{"UserId": "bot-1", "RoundId": first.roundid, "Text": "abcde"}]
    assert receiver.of(905)[0]["EventInfo"]["Payload"]["Text"] == "abcde"
    states = [
        m["payload"]["state"]
        for m in result.of_type(10001)
        if m["payload"]["roundid"] == first.roundid
    ]
    assert states == [1, 2, 3, 4]
    metrics = {
        m["payload"]["metric"]: m
        for m in result.of_type(10020)
        if m["payload"]["tag"]["roundid"] == first.roundid
    }
    assert {"llm_network_latency", "llm_first_token", "interruption"} <= set(metrics)
    # the barge-in's 904 opens the next round; that round does not repeat it
    starts = payloads(result, 904)
    assert [p["RoundId"] for p in starts] == [first.roundid, second.roundid]
    assert second.spoken_text.startswith("Reply to: next")
    assert not second.interrupted


async def test_interruption_after_the_stream_finished_is_virtual(mock: MockUpstreamThread) -> None:
    # The whole reply arrives at once; the user cuts in 500 ms into the speech, which the
    # virtual clock does not wait for. The stream completed, so the upstream saw no hang-up.
    cfg = config(mock, chars_per_second=10, interrupt_after_ms=500)
    started = time.monotonic()
    result = await run_session(cfg, [{"say": "go", "mock": alphabet()}])
    assert time.monotonic() - started < 2.5  # the 2.6 s of speech were not waited for
    (rnd,) = result.rounds
    assert (rnd.received_text, rnd.spoken_text) == (ALPHABET, "abcde")
    assert rnd.completed and rnd.interrupted
    assert mock.wait_for_outcome(0).outcome == "completed"
    assert [p["Text"] for p in payloads(result, 903) if p["UserId"] == "bot-1"] == [ALPHABET]
    assert [p["Text"] for p in payloads(result, 905)] == ["abcde"]


async def test_client_interrupt_20001_at_chars(mock: MockUpstreamThread) -> None:
    turns = [{"text": "hi", "mock": alphabet(gap_ms=30)}, {"interrupt": True, "at_chars": 7}]
    result = await run_session(config(mock, chars_per_second=20), turns)
    (rnd,) = result.rounds
    assert rnd.interrupted_by == "client" and rnd.spoken_text == "abcdefg"
    assert len(result.of_type(20001)) == 1
    assert not payloads(result, 904)  # a text turn and a client interrupt: nobody spoke
    assert [p["Text"] for p in payloads(result, 905)] == ["abcdefg"]


async def test_uninterrupted_reply_is_spoken_in_full(mock: MockUpstreamThread) -> None:
    out = io.StringIO()
    result = await run_session(
        config(mock), [{"say": "hello you", "mock": {"reply": "Hi there."}}], out=out
    )
    (rnd,) = result.rounds
    assert rnd.spoken_text == rnd.received_text == "Hi there." and not rnd.interrupted
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert lines == result.messages
    states = [m["payload"]["state"] for m in result.of_type(10001)]
    assert states == [1, 2, 3, 5]
    subtitles = [
        (m["sender"], m["payload"]["text"], m["payload"]["end"]) for m in result.of_type(10000)
    ]
    assert subtitles == [
        ("user-1", "hello", False),  # an STT hypothesis, then the sentence
        ("user-1", "hello you", True),
        ("bot-1", "Hi there.", True),
    ]
    assert [p["Text"] for p in payloads(result, 905)] == ["Hi there."]


async def test_meta_info_becomes_10002_and_is_never_spoken(mock: MockUpstreamThread) -> None:
    card = {"weather": {"city": "Paris", "temp_c": 21}}
    turn = {"say": "weather?", "mock": {"reply": "It is sunny.", "meta_info": card}}
    out = io.StringIO()
    result = await run_session(config(mock), [turn], out=out)
    (rnd,) = result.rounds
    assert rnd.received_text == rnd.spoken_text == "It is sunny."
    assert rnd.metainfo == [card]
    expected = {
        "type": 10002,
        "sender": "bot-1",
        "receiver": [],
        "roundid": rnd.roundid,
        "payload": card,
    }
    assert result.of_type(10002) == [expected]
    assert orjson.dumps(expected).decode() in out.getvalue().splitlines()
    assert all("Paris" not in p["Text"] for p in payloads(result, 905) + payloads(result, 903))


async def test_text_turn_skips_stt(mock: MockUpstreamThread, receiver: Receiver) -> None:
    result = await run_session(config(mock, receiver), [{"text": "typed"}, {"say": "spoken"}])
    typed, spoken = result.rounds
    assert typed.spoken_text.startswith("Reply to: typed")
    assert [p["RoundId"] for p in payloads(result, 904)] == [spoken.roundid]
    user_sentences = [p for p in payloads(result, 903) if p["UserId"] == "user-1"]
    assert [(p["Text"], p["RoundId"]) for p in user_sentences] == [("spoken", spoken.roundid)]
    (message,) = result.of_type(20000)
    assert message["payload"]["message"] == "typed" and message["receiver"] == ["bot-1"]
    assert mock.requests[0].body["messages"][-1] == {"role": "user", "content": "typed"}


# -- callbacks -----------------------------------------------------------------------------


async def test_callbacks_are_signed_ordered_and_complete(
    mock: MockUpstreamThread, receiver: Receiver
) -> None:
    cfg = config(mock, receiver, task_id="task-cb", room_id="4321", room_id_type="0")
    result = await run_session(cfg, ["hello", {"text": "more"}])
    assert all(r.delivered for r in result.callbacks)
    assert len(receiver.received) == len(result.callbacks)
    for record in receiver.received:
        assert record["valid"]
        assert record["headers"]["Content-Type"] == "application/json"
        assert record["headers"]["SdkAppId"] == "1400000001"
        body = record["body"]
        assert body["EventGroupId"] == 9 and body["CallbackTs"] > 0
        info = body["EventInfo"]
        assert (info["TaskId"], info["RoomId"], info["RoomIdType"]) == ("task-cb", "4321", 0)
    stamps = [r["body"]["EventInfo"]["EventMsTs"] for r in receiver.received]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    types = [r["body"]["EventType"] for r in receiver.received]
    assert types[:2] == [901, 909] and types[-1] == 902
    assert receiver.of(901)[0]["EventInfo"]["Payload"] == {"Status": 0}
    assert receiver.of(909)[0]["EventInfo"]["Payload"] == {"Status": "session_ready"}
    assert receiver.of(902)[0]["EventInfo"]["Payload"] == {"LeaveCode": 0}
    metrics = {
        (b["EventInfo"]["Payload"]["Metric"], b["EventInfo"]["Payload"]["Tag"]["RoundId"])
        for b in receiver.of(906)
    }
    for rnd in result.rounds:
        assert ("llm_first_token", rnd.roundid) in metrics
        assert ("llm_network_latency", rnd.roundid) in metrics
    user_903 = receiver.of(903)[0]["EventInfo"]["Payload"]
    assert set(user_903) == {"UserId", "Text", "StartTimeMs", "EndTimeMs", "RoundId"}
    assert user_903["StartTimeMs"] <= user_903["EndTimeMs"]


async def test_callback_is_retried_once_and_failures_never_crash(
    mock: MockUpstreamThread, receiver: Receiver
) -> None:
    receiver.fail_next = 1
    result = await run_session(config(mock, receiver), ["hi"])
    first = result.callbacks[0]
    assert first.event_type == 901 and first.attempts == 2 and first.delivered
    dead = config(mock, callback_url="http://127.0.0.1:9/nowhere", callback_key=KEY)
    result = await run_session(dead, ["hi"])
    assert result.ok and result.rounds[0].spoken_text
    assert result.callbacks and not any(c.delivered for c in result.callbacks)
    assert all(c.attempts == 2 and c.error for c in result.callbacks)


async def test_callback_order_before_sends_905_while_the_stream_is_open(
    mock: MockUpstreamThread, receiver: Receiver
) -> None:
    turn = {"say": "long", "interrupt_after_ms": 200, "mock": alphabet(gap_ms=50)}
    cfg = config(mock, receiver, callback_order="before", chars_per_second=10)
    result = await run_session(cfg, [turn])
    assert result.rounds[0].spoken_text == "ab"
    closed = mock.wait_for_outcome(0)
    assert closed.outcome == "client_closed" and closed.ended_at is not None
    (spoken,) = [r for r in receiver.received if r["body"]["EventType"] == 905]
    assert spoken["at"] < closed.ended_at  # the backend heard 905 before the hang-up


# -- TTS -----------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def tts_server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def synthesize(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append({"headers": request.headers.copy(), "body": body})
        if "fail" in body["Text"]:
            error = {"error": {"code": "VoiceNotFound", "message": "no such voice"}}
            return web.json_response(error, status=400)
        response = web.StreamResponse(headers={"Content-Type": "audio/L16"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(3):
            await response.write(body["Text"].encode() * 10)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/tts", synthesize)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/tts", seen
    await runner.cleanup()


async def test_tts_round_trip(
    mock: MockUpstreamThread, tts_server: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    url, seen = tts_server
    cfg = config(mock, tts_url=url, tts_key="tts-key", audio_dir=str(tmp_path), task_id="t-tts")
    turns = [
        {"say": "a", "mock": {"reply": "Hello there."}},
        {"say": "b", "mock": {"reply": "please fail"}},
    ]
    result = await run_session(cfg, turns)
    ok, failed = result.rounds
    assert ok.tts is not None and ok.tts.path == str(tmp_path / f"{ok.roundid}.pcm")
    audio = await asyncio.to_thread(Path(ok.tts.path).read_bytes)
    assert audio == b"Hello there." * 30
    assert seen[0]["body"] == {
        "Text": "Hello there.",
        "Format": "pcm",
        "SampleRate": 16000,
        "Channel": 1,
    }
    headers = seen[0]["headers"]
    assert headers["Authorization"] == "Bearer tts-key" and headers["X-Task-Id"] == "t-tts"
    assert headers["X-Request-Id"] == ok.request_id and headers["X-Room-Id-Type"] == "1"
    tts_metrics = {
        m["payload"]["metric"]
        for m in result.of_type(10020)
        if m["payload"]["tag"]["roundid"] == ok.roundid
    }
    assert {"tts_network_latency", "tts_first_frame_latency"} <= tts_metrics
    (error,) = result.of_type(10030)
    assert error["payload"]["metric"] == "tts_error"
    assert error["payload"]["tag"]["code"] == 30302
    assert error["payload"]["tag"]["roundid"] == failed.roundid
    assert "VoiceNotFound" in error["payload"]["tag"]["message"]
    assert failed.tts is not None and failed.tts.path is None


# -- scripts and the command line ----------------------------------------------------------


def test_script_formats() -> None:
    as_array = parse_script_text(
        '[{"say": "a", "interrupt_after_ms": 300}, {"text": "b"},'
        ' {"interrupt": true, "after_ms": 200}]'
    )
    as_lines = parse_script_text(
        '# comment\n{"say": "a", "interrupt_after_ms": 300}\n{"text": "b"}\n'
        '{"interrupt": true, "after_ms": 200}\n'
    )
    assert as_array == as_lines
    assert as_array[0] == Turn("say", "a", interrupt_after_ms=300)
    assert as_array[1] == Turn("text", "b", client_interrupt_after_ms=200)
    assert parse_script_text("hello\n\nworld\n") == [Turn("say", "hello"), Turn("say", "world")]
    (folded,) = fold_turns(["x", ClientInterrupt(at_chars=4)])
    assert (folded.client_interrupt_after_ms, folded.client_interrupt_at_chars) == (0, 4)
    for bad in (
        '{"interrupt": true}',
        '[{"say": 1}]',
        '{"say": "a", "text": "b"}',
        '{"say": "a", "wait_ms": -1}',
        "[1]",
    ):
        with pytest.raises(ScriptError):
            parse_script_text(bad)


def test_llm_config_and_flag_overrides(tmp_path: Path) -> None:
    llm = {
        "LLMType": "openai",
        "APIUrl": "http://x/v1/chat/completions",
        "APIKey": "k",
        "Model": "m",
        "Timeout": 5,
        "History": 3,
        "UserMessages": [{"Role": "assistant", "Content": "hi"}],
        "MetaInfo": {"a": 1},
    }
    path = tmp_path / "llm.json"
    path.write_bytes(orjson.dumps(llm))
    assert llm_config_fields(str(path)) == llm_config_fields(orjson.dumps(llm).decode())
    options = parse_args(
        [
            "--llm-config",
            str(path),
            "--timeout",
            "2",
            "--model",
            "n",
            "--meta-info",
            '{"b": 2}',
            "--script",
            "s.json",
        ]
    )
    cfg = options.config
    assert (cfg.url, cfg.api_key, cfg.model, cfg.timeout_s, cfg.history) == (
        "http://x/v1/chat/completions",
        "k",
        "n",
        2.0,
        3,
    )
    assert cfg.user_messages == [{"role": "assistant", "content": "hi"}]
    assert cfg.meta_info == {"b": 2} and cfg.streaming and not cfg.realtime
    with pytest.raises(ScriptError):
        llm_config_fields('{"APIUrl": "x", "Timeout": 3, "Bogus": 1}')
    with pytest.raises(ScriptError):
        EngineConfig(url="http://x", timeout_s=60)
    with pytest.raises(ScriptError):
        EngineConfig(url="http://x", history=51)


async def test_command_line_script_and_stdin(mock: MockUpstreamThread, tmp_path: Path) -> None:
    script = tmp_path / "turns.jsonl"
    script.write_text('{"say": "hello", "mock": {"meta_info": {"k": 1}}}\n{"text": "bye"}\n')
    url = mock.base_url + "/chat/completions"

    async def run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proxy.dev.voice.engine",
            "--url",
            url,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, out, err = await run("--script", str(script), "--table")
    assert code == 0, err
    lines = out.splitlines()
    messages = [orjson.loads(line) for line in lines if line.startswith("{")]
    assert {10000, 10001, 10002, 10020, 20000} <= {m["type"] for m in messages}
    assert "first ms" in out and "retries" in out  # the table, after the JSON lines

    code, out, err = await run(
        "--quiet", stdin=b'just text\n{"say": "x", "mock": {"status": 429}}\n'
    )
    assert code == 1 and out == ""
    assert "net ms" in err and len(mock.requests) == 4


# -- through the proxy ---------------------------------------------------------------------


@pytest.mark.parametrize("order", ["after", "before"])
async def test_through_the_proxy_history_keeps_what_was_heard(
    mock: MockUpstreamThread, make_proxy: Any, order: str
) -> None:
    proxy = make_proxy(callback_sign_key=KEY)
    cfg = EngineConfig(
        url=proxy.base_url + "/chat/completions",
        callback_url=proxy.url + "/callbacks/trtc",
        callback_key=KEY,
        callback_order=order,  # type: ignore[arg-type]
        chars_per_second=10,
    )
    turns = [
        {"say": "tell me", "interrupt_after_ms": 500, "mock": alphabet(gap_ms=60)},
        {"say": "go on"},
    ]
    result = await run_session(cfg, turns)
    assert result.ok and all(c.delivered for c in result.callbacks)
    first = result.rounds[0]
    assert first.spoken_text == "abcde" and first.interrupted
    upstream = mock.wait_for_requests(2)[1].body["messages"]
    assert {"role": "assistant", "content": "abcde"} in upstream
    assert upstream[-1] == {"role": "user", "content": "go on"}
