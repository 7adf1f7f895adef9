"""The chat pipeline: call context -> history -> upstream -> relay -> commit.

Stateless requests (no ``X-Task-Id``) go straight to the upstream, unchanged.
Stateful ones get the task's history and are recorded as what the caller received:
a reply cut short by a disconnect is stored as ``interrupted`` with only the text
that was sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from proxy.access.catalog import ResolvedProfile
from proxy.chat.profiles import apply_profile
from proxy.chat.replay import replay_completion, replay_frames
from proxy.chat.reply import ReplyAccumulator
from proxy.chat.sse import DONE_FRAME, error_frame, frame
from proxy.context.assembly import assemble, split_request
from proxy.context.budget import TokenCounter
from proxy.context.call import CallContext
from proxy.context.history import (
    ClaimState,
    HistoryStore,
    StoredAnswer,
    StoredMessage,
    TaskHistory,
)
from proxy.context.summary import Summariser
from proxy.db.transcript import TranscriptWriter
from proxy.errors import UpstreamError
from proxy.metrics import ProxyMetrics
from proxy.settings import HistoryPolicy, Settings
from proxy.upstream.routes import CompletionStream, UpstreamRouter
from proxy.voice.spoken import SpokenTextReconciler

log = logging.getLogger(__name__)
T = TypeVar("T")
_STORE_FAILED = object()


@dataclass(slots=True)
class PendingTurn:
    """What a stateful request will write to the history when it ends."""

    call: CallContext
    task_id: str
    attempt_id: str | None
    new_turn: list[StoredMessage]
    seed: list[StoredMessage] | None
    owner: asyncio.Task[Any] | None = None  # the task relaying it, cancelled on takeover
    stored_messages: int = 0  # in the store before this turn
    policy: HistoryPolicy | None = None
    profile: str | None = None


class ChatService:
    def __init__(
        self,
        settings: Settings,
        router: UpstreamRouter,
        history: HistoryStore,
        counter: TokenCounter,
        summariser: Summariser | None = None,
        transcripts: TranscriptWriter | None = None,
        spoken: SpokenTextReconciler | None = None,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.history = history
        self.counter = counter
        self.summariser = summariser
        self.transcripts = transcripts
        self.spoken = spoken
        self.metrics = metrics or ProxyMetrics()
        self.store_errors = 0
        self._store_timeout = settings.redis_timeout_ms / 1000
        self._streams: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self._commits: dict[str, asyncio.Task[None]] = {}

    # Entry points.

    async def complete(
        self, body: dict[str, Any], call: CallContext, profile: ResolvedProfile | None = None
    ) -> dict[str, Any]:
        """A non-streaming reply."""
        prepared = await self._prepare(body, call, profile)
        if isinstance(prepared, StoredAnswer):
            return replay_completion(prepared)
        upstream_body, turn = prepared
        try:
            response = await self.router.complete(upstream_body)
        finally:
            if turn is not None:
                self._forget_stream(turn)
        if turn is not None:
            await self._commit_completion(turn, response)
        return response

    async def stream(
        self,
        body: dict[str, Any],
        call: CallContext,
        profile: ResolvedProfile | None = None,
        received_at: float | None = None,
    ) -> AsyncIterator[bytes]:
        """Open the upstream stream; errors before the first byte raise ``ProxyError``.

        ``received_at`` (``time.perf_counter()`` when the request arrived) lets the relay
        measure the proxy's own share of the time to first byte.
        """
        received_at = received_at or time.perf_counter()
        prepared = await self._prepare(body, call, profile)
        if isinstance(prepared, StoredAnswer):
            return replay_frames(prepared)
        upstream_body, turn = prepared
        try:
            stream = await self.router.open_stream(upstream_body)
        except asyncio.CancelledError:
            if turn is not None:  # the caller left before the first token: keep what they said
                self._forget_stream(turn)
                self._commit_interrupted(turn, "")
            raise
        except BaseException:
            if turn is not None:
                self._forget_stream(turn)
            raise
        return self._relay(stream, turn, str(upstream_body.get("model")), received_at)

    # Before the upstream call.

    async def _prepare(
        self, body: dict[str, Any], call: CallContext, profile: ResolvedProfile | None
    ) -> StoredAnswer | tuple[dict[str, Any], PendingTurn | None]:
        if profile is not None:
            body = apply_profile(body, profile)
        if call.task_id is None:
            return body, None
        task_id = call.task_id
        pending = self._commits.get(task_id)
        if pending is not None:  # an interrupted turn is still being written
            await asyncio.wait({pending}, timeout=self._store_timeout)

        attempt_id: str | None = None
        owner = asyncio.current_task()
        if call.request_id is not None:
            claim = await self._guard(self.history.claim_request(task_id, call.request_id))
            if claim is _STORE_FAILED:
                return body, None
            if claim.state is ClaimState.REPLAY and claim.answer is not None:
                log.info("replaying a finished request", extra=call.log_fields())
                self.metrics.replays.inc()
                return claim.answer
            if claim.state is ClaimState.TAKEOVER:
                self._cancel_stream(task_id, call.request_id)
            attempt_id = claim.attempt_id
            if owner is not None:
                self._streams[(task_id, call.request_id)] = owner

        policy = profile.policy if profile is not None else self.settings.history
        history = await self._guard(self.history.load(task_id, policy.load_limit))
        if history is _STORE_FAILED:
            return body, None
        assert isinstance(history, TaskHistory)
        prompt = assemble(
            split_request(body["messages"]),
            history,
            policy=policy,
            counter=self.counter,
            request_id=call.request_id,
        )
        self.metrics.history_turns.observe(len(prompt.history_used))
        self.metrics.history_tokens.observe(sum(m.tokens or 0 for m in prompt.history_used))
        turn = PendingTurn(
            call,
            task_id,
            attempt_id,
            prompt.new_turn,
            prompt.seed,
            owner,
            history.total_messages,
            policy,
            profile.name if profile is not None else None,
        )
        return {**body, "messages": prompt.messages}, turn

    def _cancel_stream(self, task_id: str, request_id: str) -> None:
        earlier = self._streams.pop((task_id, request_id), None)
        if earlier is not None and not earlier.done():
            log.info("a retry takes over a request still streaming", extra={"task_id": task_id})
            earlier.cancel()

    # The relay.

    async def _relay(
        self, stream: CompletionStream, turn: PendingTurn | None, model: str, received_at: float
    ) -> AsyncIterator[bytes]:
        reply = ReplyAccumulator()
        spoken: list[str] = []  # text that reached the caller
        finished = False
        metrics = self.metrics
        metrics.active_streams.inc()
        last_batch_at: float | None = None
        try:
            batch: list[bytes] | None = stream.first_events
            batches = stream.batches()
            while batch is not None:
                now = time.perf_counter()
                if last_batch_at is None:
                    metrics.overhead.observe(max(now - received_at - stream.waited, 0.0))
                else:
                    metrics.chunk_gap.observe(now - last_batch_at)
                last_batch_at = now
                out = []
                texts = []
                for payload in batch:
                    text = reply.feed(payload)
                    if reply.done or reply.error is not None:
                        break
                    out.append(frame(payload))
                    if text:
                        texts.append(text)
                if out:
                    yield b"".join(out)
                    spoken.extend(texts)
                if reply.error is not None:
                    raise reply.error
                if reply.done:
                    break
                batch = await anext(batches, None)
            if not reply.done:
                raise UpstreamError("upstream stream ended before [DONE]")
            finished = True
            if turn is not None:
                await self._commit_finished(turn, reply)
            yield DONE_FRAME
        except UpstreamError as exc:
            log.warning("upstream failed mid-stream: %s", exc.message)
            yield error_frame(exc) + DONE_FRAME
        finally:
            stream.close()
            metrics.active_streams.dec()
            self._observe_reply(reply, model, received_at)
            if turn is not None:
                self._forget_stream(turn)
                if not finished:
                    self._commit_interrupted(turn, "".join(spoken))

    def _observe_reply(self, reply: ReplyAccumulator, model: str, received_at: float) -> None:
        metrics = self.metrics
        metrics.operation_duration.labels("chat", model).observe(time.perf_counter() - received_at)
        usage = reply.usage or {}
        for kind, field in (("input", "prompt_tokens"), ("output", "completion_tokens")):
            if isinstance(usage.get(field), int):
                metrics.token_usage.labels(kind, model).observe(usage[field])

    def _forget_stream(self, turn: PendingTurn) -> None:
        if turn.call.request_id is not None:
            key = (turn.task_id, turn.call.request_id)
            if self._streams.get(key) is turn.owner:
                del self._streams[key]

    # Writing the turn.

    async def _commit_finished(self, turn: PendingTurn, reply: ReplyAccumulator) -> None:
        assistant = reply.assistant_message(turn.call.request_id)
        await self._write(turn, [*turn.new_turn, assistant], reply.answer())

    async def _commit_completion(self, turn: PendingTurn, response: dict[str, Any]) -> None:
        reply = ReplyAccumulator()
        choice: dict[str, Any] = next(iter(response.get("choices") or []), {})
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            reply.parts.append(message["content"])
        for index, call in enumerate(message.get("tool_calls") or []):
            reply.tool_calls[index] = call
        reply.finish_reason = choice.get("finish_reason")
        reply.model, reply.completion_id = response.get("model"), response.get("id")
        await self._commit_finished(turn, reply)

    def _commit_interrupted(self, turn: PendingTurn, spoken: str) -> None:
        """Runs in its own task: the request's task may be cancelled already."""
        messages = list(turn.new_turn)
        if spoken:
            messages.append(
                StoredMessage(
                    role="assistant",
                    content=spoken,
                    request_id=turn.call.request_id,
                    interrupted=True,
                )
            )
        self.metrics.interruptions.inc()
        log.info("reply interrupted after %d characters", len(spoken), extra=turn.call.log_fields())
        task = asyncio.create_task(self._write(turn, messages, None))
        self._commits[turn.task_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._commits.get(turn.task_id) is done:
                del self._commits[turn.task_id]

        task.add_done_callback(forget)

    async def _write(
        self, turn: PendingTurn, messages: list[StoredMessage], answer: StoredAnswer | None
    ) -> None:
        if self.spoken is not None:  # a 905 may have arrived before its turn
            folded = await self._guard(self.spoken.before_commit(turn.task_id, messages))
            if folded is not _STORE_FAILED:
                messages = folded
        for message in messages:
            self.counter.count_message(message)  # cached with the message, counted once
        if turn.seed:
            for message in turn.seed:
                self.counter.count_message(message)
        committed = await self._guard(
            self.history.commit_turn(
                turn.task_id,
                turn.call.request_id,
                turn.attempt_id,
                messages,
                answer=answer,
                seed=turn.seed,
            )
        )
        if committed is not False and self.transcripts is not None:
            self.transcripts.submit(
                turn.call, [*(turn.seed or ()), *messages], profile=turn.profile
            )
        if committed is False:
            log.info(
                "a newer attempt owns this request; not recorded", extra=turn.call.log_fields()
            )
        if committed is True and answer is not None and self.summariser is not None:
            stored = turn.stored_messages + len(turn.seed or ()) + len(messages)
            self.summariser.maybe_schedule(turn.task_id, stored, turn.policy)

    async def _guard(self, operation: Awaitable[T]) -> T | Any:
        """A store call that can never hang a request: time-boxed, failures degrade."""
        try:
            async with asyncio.timeout(self._store_timeout):
                return await operation
        except Exception as exc:
            self.store_errors += 1
            log.error("history store unavailable, continuing without it: %r", exc)
            return _STORE_FAILED

    async def drain(self) -> None:
        """Wait for background history writes (graceful shutdown)."""
        if self._commits:
            await asyncio.wait(set(self._commits.values()), timeout=5)
