"""What the engine stand-in is told: its configuration and the conversation's turns.

``EngineConfig`` mirrors the engine's ``LLMConfig`` (CONTRACT §1) plus the room, callback
and TTS settings around it. A script is a JSON array or JSON lines of turns::

    {"say": "hello"}                      recognised speech: 904, then 903 with the sentence
    {"text": "hello"}                     a client text message (type 20000): skips STT
    {"say": "...", "interrupt_after_ms": 500}   the user talks over the bot 500 ms in
    {"say": "...", "interrupt_at_chars": 12}    ... once the bot has spoken 12 characters
    {"interrupt": true, "after_ms": 300}  a client 20001 interrupting the reply before it
    optional on say/text turns: "wait_ms" (pause before the turn), "mock" (sent in the
    body's "mock" field to drive the mock upstream)

Plain lines (not starting with ``{``) are ``say`` turns; ``#`` lines are comments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson


class ScriptError(ValueError):
    """A turn, a script or an LLMConfig that cannot be used."""


@dataclass(slots=True)
class EngineConfig:
    """One engine session: the LLMConfig fields, the room identity, callbacks and TTS."""

    url: str  # LLMConfig.APIUrl: the full chat-completions URL
    api_key: str = ""
    model: str = "gpt-4o-mini"
    streaming: bool = True  # the engine's default is false; true is recommended and used here
    system_prompt: str = ""
    timeout_s: float = 3.0  # no first content token within this: abandon, retry, then 30200
    history: int = 0  # rounds of context the engine itself re-sends
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    user_messages: list[dict[str, str]] = field(default_factory=list)
    meta_info: dict[str, Any] | None = None
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    sdk_app_id: str = "1400000001"
    user_id: str = "user-1"
    bot_id: str = "bot-1"
    room_id: str = "room-1"
    room_id_type: str = "1"
    retries: int = 1  # timeouts retried with the same X-Request-Id
    stall_timeout_s: float = 30.0  # silence after the first token that counts as a timeout
    chars_per_second: float = 12.0  # the speech clock
    interrupt_after_ms: float | None = None  # barge-in on every turn, N ms after first token
    realtime: bool = False  # actually wait for speech to "play" (else a virtual clock)
    callback_url: str | None = None
    callback_key: str = ""
    callback_retries: int = 1
    callback_timeout_s: float = 5.0
    callback_order: Literal["after", "before"] = "after"  # 905 vs closing an interrupted stream
    vad_silence_s: float = 1.0  # STTConfig.VadSilenceTime: bounds waiting for callbacks
    tts_url: str | None = None
    tts_key: str = ""
    tts_format: Literal["pcm", "wav"] = "pcm"
    tts_sample_rate: int = 16000
    tts_timeout_s: float = 5.0
    audio_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.url:
            raise ScriptError("an LLM URL (APIUrl / --url) is required")
        if not 1 <= self.timeout_s <= 50:
            raise ScriptError(f"Timeout must be 1-50 seconds, got {self.timeout_s}")
        if not 0 <= self.history <= 50:
            raise ScriptError(f"History must be 0-50 rounds, got {self.history}")
        if self.chars_per_second <= 0:
            raise ScriptError("chars_per_second must be positive")
        if self.retries < 0 or self.callback_retries < 0:
            raise ScriptError("retry counts must not be negative")
        if self.callback_order not in ("after", "before"):
            raise ScriptError("callback_order must be 'after' or 'before'")
        if self.tts_format not in ("pcm", "wav"):
            raise ScriptError("tts_format must be 'pcm' or 'wav'")
        self.user_messages = [_user_message(m) for m in self.user_messages]


_LLM_FIELDS = {
    "APIUrl": "url",
    "APIKey": "api_key",
    "Model": "model",
    "Streaming": "streaming",
    "SystemPrompt": "system_prompt",
    "Timeout": "timeout_s",
    "History": "history",
    "MaxTokens": "max_tokens",
    "Temperature": "temperature",
    "TopP": "top_p",
    "UserMessages": "user_messages",
    "MetaInfo": "meta_info",
}
_IGNORED_LLM_FIELDS = {"LLMType"}


def llm_config_fields(source: str | Mapping[str, Any]) -> dict[str, Any]:
    """An LLMConfig (object, JSON text or a file holding it) as EngineConfig keyword args."""
    if isinstance(source, str):
        text = source if source.lstrip().startswith("{") else _read(source)
        source = _json(text, "LLMConfig")
    if not isinstance(source, Mapping):
        raise ScriptError("LLMConfig must be a JSON object")
    unknown = set(source) - set(_LLM_FIELDS) - _IGNORED_LLM_FIELDS
    if unknown:
        raise ScriptError(f"unknown LLMConfig fields {sorted(unknown)}; known: {list(_LLM_FIELDS)}")
    fields = {_LLM_FIELDS[k]: v for k, v in source.items() if k in _LLM_FIELDS}
    if isinstance(fields.get("meta_info"), str):
        fields["meta_info"] = _json(fields["meta_info"], "MetaInfo")
    return fields


def _user_message(message: Any) -> dict[str, str]:
    if not isinstance(message, Mapping):
        raise ScriptError("UserMessages entries must be objects with Role and Content")
    role = message.get("Role", message.get("role"))
    content = message.get("Content", message.get("content"))
    if not isinstance(role, str) or not isinstance(content, str):
        raise ScriptError("UserMessages entries need string Role and Content")
    return {"role": role.lower(), "content": content}


@dataclass(slots=True)
class Turn:
    """One user turn, and how (if at all) the user cuts the bot's reply short."""

    kind: Literal["say", "text"]
    text: str
    interrupt_after_ms: float | None = None  # barge-in by speech
    interrupt_at_chars: int | None = None
    wait_ms: float = 0.0
    mock: dict[str, Any] | None = None
    client_interrupt_after_ms: float | None = None  # a following 20001 message
    client_interrupt_at_chars: int | None = None


@dataclass(slots=True)
class ClientInterrupt:
    """A client 20001 message: interrupts the reply to the turn before it."""

    after_ms: float = 0.0  # after the reply's first token
    at_chars: int | None = None  # or once the bot has spoken this many characters


def parse_turn(item: Turn | ClientInterrupt | Mapping[str, Any] | str) -> Turn | ClientInterrupt:
    if isinstance(item, Turn | ClientInterrupt):
        return item
    if isinstance(item, str):
        return Turn("say", item)
    if not isinstance(item, Mapping):
        raise ScriptError(f"a turn must be an object or a string, got {item!r}")
    if item.get("interrupt"):
        after = item.get("after_ms", item.get("wait_ms", 0))
        return ClientInterrupt(_number(after, "after_ms"), _count(item.get("at_chars")))
    kinds = [k for k in ("say", "text") if k in item]
    if len(kinds) != 1 or not isinstance(item[kinds[0]], str):
        raise ScriptError(f'a turn needs exactly one of "say" or "text" (a string): {item!r}')
    mock = item.get("mock")
    if mock is not None and not isinstance(mock, Mapping):
        raise ScriptError('"mock" must be an object')
    return Turn(
        kind="say" if kinds[0] == "say" else "text",
        text=item[kinds[0]],
        interrupt_after_ms=_optional_number(item.get("interrupt_after_ms"), "interrupt_after_ms"),
        interrupt_at_chars=_count(item.get("interrupt_at_chars")),
        wait_ms=_number(item.get("wait_ms", 0), "wait_ms"),
        mock=dict(mock) if mock is not None else None,
    )


def fold_turns(items: Iterable[Turn | ClientInterrupt | Mapping[str, Any] | str]) -> list[Turn]:
    """Parse turns, attaching each client interrupt to the reply of the turn before it."""
    turns: list[Turn] = []
    for item in items:
        parsed = parse_turn(item)
        if isinstance(parsed, Turn):
            turns.append(parsed)
        elif not turns:
            raise ScriptError("an interrupt needs a turn before it to interrupt")
        else:
            turns[-1].client_interrupt_after_ms = parsed.after_ms
            turns[-1].client_interrupt_at_chars = parsed.at_chars
    return turns


def parse_script_text(text: str) -> list[Turn]:
    """A JSON array of turns, or one turn per line (JSON objects or plain ``say`` text)."""
    if text.lstrip().startswith("["):
        items = _json(text, "script")
        if not isinstance(items, list):
            raise ScriptError("a script must be a JSON array of turns")
        return fold_turns(items)
    return fold_turns(parse_line(line) for line in text.splitlines() if _meaningful(line))


def parse_line(line: str) -> Mapping[str, Any] | str:
    """One input line: a JSON turn when it starts with ``{``, else the text of a say turn."""
    stripped = line.strip()
    if stripped.startswith("{"):
        item = _json(stripped, "turn")
        if not isinstance(item, Mapping):
            raise ScriptError(f"not a turn: {stripped}")
        return item
    return stripped


def load_script(path: str | Path) -> list[Turn]:
    return parse_script_text(_read(str(path)))


def _meaningful(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptError(f"cannot read {path}: {exc}") from exc


def _json(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ScriptError(f"{what} is not valid JSON: {exc}") from exc


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ScriptError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def _optional_number(value: Any, name: str) -> float | None:
    return None if value is None else _number(value, name)


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScriptError(f"a character count must be a non-negative integer, got {value!r}")
    return value


# -- the command line ----------------------------------------------------------------------

# Flags that override the LLMConfig or a default: same names as EngineConfig fields, but
# --timeout is timeout_s.
_FLAG_FIELDS = [
    *("url", "api_key", "model", "system_prompt", "timeout", "history", "max_tokens"),
    *("temperature", "top_p", "meta_info", "task_id", "sdk_app_id", "user_id", "bot_id"),
    *("room_id", "room_id_type", "retries", "chars_per_second", "interrupt_after_ms"),
    *("callback_url", "callback_key", "callback_retries", "callback_order", "tts_url"),
    *("tts_key", "tts_format", "audio_dir"),
]


@dataclass(slots=True)
class Options:
    config: EngineConfig
    script: str | None
    interactive: bool
    table: bool
    quiet: bool


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="proxy engine",
        description="Drive a conversation against an OpenAI-compatible chat-completions URL "
        "the way the TRTC Conversational AI engine does. Room messages go to stdout as JSON "
        "lines, the latency table to stderr.",
    )
    add = p.add_argument
    add("--llm-config", metavar="FILE|JSON", help="the engine's LLMConfig (APIUrl, Model, ...)")
    add("--url", help="chat-completions URL (LLMConfig.APIUrl)")
    add("--api-key", help="sent as Authorization: Bearer")
    add("--model")
    add("--system-prompt")
    add("--history", type=int, help="rounds of context re-sent, 0-50 (default 0)")
    add("--timeout", type=float, help="seconds to the first token, 1-50 (default 3)")
    add("--max-tokens", type=int)
    add("--temperature", type=float)
    add("--top-p", type=float)
    add("--meta-info", type=_json_object, metavar="JSON", help="LLMConfig.MetaInfo object")
    add("--no-stream", action="store_true", help="Streaming=false")
    add("--task-id", help="X-Task-Id (default: a new uuid)")
    add("--sdk-app-id", default="1400000001")
    add("--user-id", default="user-1")
    add("--bot-id", default="bot-1")
    add("--room-id", default="room-1")
    add("--room-id-type", default="1", choices=["0", "1"])
    add("--retries", type=int, default=1, help="retries after a first-token timeout")
    add("--chars-per-second", type=float, default=12.0, help="speech rate (default 12)")
    add(
        "--interrupt-after-ms",
        type=float,
        help="barge in on every reply N ms after its first token",
    )
    add("--realtime", action="store_true", help="wait out speech time (default: virtual clock)")
    add("--no-speech-delay", action="store_true", help="never wait out speech time")
    add("--callback-url", help="where to POST signed server callbacks")
    add("--callback-key", default="", help="the callback signing key")
    add("--callback-retries", type=int, default=1)
    add(
        "--callback-order",
        choices=["after", "before"],
        default="after",
        help="an interrupted round's 905: after (default) or before closing the stream",
    )
    add(
        "--vad-silence-ms",
        type=float,
        default=1000.0,
        help="STT end-of-sentence silence: the longest wait for callbacks before a request",
    )
    add("--tts-url", help="custom TTS endpoint (CONTRACT §6)")
    add("--tts-key", default="")
    add("--tts-format", choices=["pcm", "wav"], default="pcm")
    add("--audio-dir", help="save each round's audio as <roundid>.<pcm|wav>")
    add("--script", metavar="FILE", help="turns: a JSON array or JSON lines")
    add("--table", action="store_true", help="print the latency table to stdout at the end")
    add("--quiet", action="store_true", help="do not print room messages")
    return p


def parse_args(argv: list[str] | None) -> Options:
    args = build_parser().parse_args(argv)
    fields = llm_config_fields(args.llm_config) if args.llm_config else {}
    for flag in _FLAG_FIELDS:
        if (value := getattr(args, flag)) is not None:
            fields["timeout_s" if flag == "timeout" else flag] = value
    fields["vad_silence_s"] = args.vad_silence_ms / 1000
    if args.no_stream:
        fields["streaming"] = False
    interactive = args.script is None and sys.stdin.isatty()
    fields["realtime"] = args.realtime or (interactive and not args.no_speech_delay)
    if "url" not in fields:
        raise ScriptError("give the LLM URL with --url or --llm-config")
    try:
        config = EngineConfig(**fields)
    except TypeError as exc:
        raise ScriptError(str(exc)) from exc
    return Options(config, args.script, interactive, args.table, args.quiet)


def turn_source(options: Options) -> list[Turn] | AsyncIterator[Mapping[str, Any] | str]:
    """The script file, else stdin (read whole when piped), else an interactive prompt."""
    if options.script is not None:
        return load_script(options.script)
    if not options.interactive:
        return parse_script_text(sys.stdin.read())
    return _prompt_turns()


async def _prompt_turns() -> AsyncIterator[Mapping[str, Any] | str]:
    while True:
        try:
            line = await _input("you> ")
        except EOFError:
            return
        if line.strip() in ("/quit", "/exit"):
            return
        if _meaningful(line):
            try:
                yield parse_line(line)
            except ScriptError as exc:
                print(f"engine: {exc}", file=sys.stderr)


async def _input(prompt: str) -> str:
    """A line from the terminal without a thread, so Ctrl-C never waits on a pending read."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    line: asyncio.Future[str] = loop.create_future()

    def readable() -> None:  # a terminal in canonical mode delivers whole lines
        if not line.done():
            line.set_result(sys.stdin.readline())

    loop.add_reader(sys.stdin.fileno(), readable)
    try:
        text = await line
    finally:
        loop.remove_reader(sys.stdin.fileno())
    if not text:
        raise EOFError
    return text.rstrip("\n")


def _json_object(text: str) -> dict[str, Any]:
    value = _json(text, "--meta-info")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value
