"""The engine's custom TTS leg (CONTRACT §6): text in, chunked audio out to a file.

Errors map to the engine's codes: 30300 timeout, 30301 rate limited, 30302 service failure
(the TTS service's own ``{"error": {"code", "message"}}`` is wrapped in the message).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

TTS_TIMEOUT, TTS_RATE_LIMITED, TTS_FAILED = 30300, 30301, 30302
_EXTENSIONS = {
    "audio/l16": "pcm",
    "audio/pcm": "pcm",
    "audio/wav": "wav",
    "audio/wave": "wav",
    "audio/x-wav": "wav",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
}


@dataclass(slots=True)
class TTSResult:
    path: str | None = None  # where the audio went (None without an audio directory)
    audio_bytes: int = 0
    content_type: str | None = None
    network_ms: float | None = None  # to the response headers
    first_frame_ms: float | None = None  # to the first audio bytes
    error_code: int | None = None
    error_message: str | None = None


def _error_message(raw: bytes, status: int) -> str:
    try:
        error: Any = orjson.loads(raw).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return f"{code}: {message}" if code else str(message)
    text = raw[:200].decode("utf-8", "replace").strip()
    return f"TTS HTTP {status}" + (f": {text}" if text else "")


async def synthesize(
    http: aiohttp.ClientSession,
    url: str,
    *,
    api_key: str,
    headers: dict[str, str],
    text: str,
    roundid: str,
    audio_dir: str | None,
    fmt: str = "pcm",
    sample_rate: int = 16000,
    timeout_s: float = 5.0,
) -> TTSResult:
    """POST the text, stream the audio to ``<audio_dir>/<roundid>.<ext>``; never raises."""
    body = {"Text": text, "Format": fmt, "SampleRate": sample_rate, "Channel": 1}
    request_headers = {
        **headers,
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
    }
    # sock_read bounds each wait for bytes, so a long but steady stream is fine.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
    result = TTSResult()
    started = time.monotonic()
    try:
        async with http.post(
            url, data=orjson.dumps(body), headers=request_headers, timeout=timeout
        ) as response:
            result.network_ms = (time.monotonic() - started) * 1000
            result.content_type = response.content_type.lower()
            if response.status >= 400 or result.content_type == "application/json":
                result.error_code = TTS_RATE_LIMITED if response.status == 429 else TTS_FAILED
                result.error_message = _error_message(await response.read(), response.status)
                return result
            await _save(response, result, started, audio_dir, roundid, fmt)
    except TimeoutError:
        result.error_code, result.error_message = TTS_TIMEOUT, "TTS request timed out"
    except aiohttp.ClientError as exc:
        result.error_code, result.error_message = TTS_FAILED, f"TTS request failed: {exc}"
    return result


async def _save(
    response: aiohttp.ClientResponse,
    result: TTSResult,
    started: float,
    audio_dir: str | None,
    roundid: str,
    fmt: str,
) -> None:
    sink = None
    if audio_dir:
        extension = _EXTENSIONS.get(result.content_type or "", fmt)
        path = Path(audio_dir) / f"{roundid}.{extension}"
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        sink = await asyncio.to_thread(path.open, "wb")
        result.path = str(path)
    try:
        async for chunk in response.content.iter_any():
            if result.first_frame_ms is None:
                result.first_frame_ms = (time.monotonic() - started) * 1000
            result.audio_bytes += len(chunk)
            if sink is not None:
                sink.write(chunk)
    finally:
        if sink is not None:
            sink.close()
