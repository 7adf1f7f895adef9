"""A local OpenAI-compatible embeddings server for the dense-retrieval tests.

``POST /v1/embeddings`` embeds each input deterministically: a hashed bag of character
bigrams (and words) in 256 dimensions, L2-normalised, so texts sharing bigrams are
similar. Answers float lists or base64 float32 (what the openai SDK asks for).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import threading
import unicodedata
from typing import Any

import numpy as np
from aiohttp import web

DIMENSIONS = 256


def embed(text: str, dimensions: int = DIMENSIONS) -> np.ndarray:
    text = unicodedata.normalize("NFKC", text).lower()
    vector = np.zeros(dimensions, np.float32)
    features = [text[i : i + 2] for i in range(len(text) - 1)] + text.split()
    for feature in features:
        if feature.strip():
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            vector[int.from_bytes(digest[:4], "little") % dimensions] += 1.0
    norm = np.linalg.norm(vector)
    return vector / norm if norm else vector


class EmbeddingsServer:
    """The server on its own event loop in a daemon thread (usable from sync tests)."""

    def __init__(self, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = delay_seconds
        self.requests: list[dict[str, Any]] = []
        self.fail = False
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if self.fail:
            return web.json_response({"error": {"message": "down"}}, status=500)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for index, text in enumerate(inputs):
            vector = embed(str(text), int(body.get("dimensions") or DIMENSIONS))
            if body.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode()
            else:
                encoded = vector.tolist()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "test"),
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        )

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(None)
        loop.run_forever()
        loop.close()

    def start(self) -> EmbeddingsServer:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.result(timeout=10)
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
