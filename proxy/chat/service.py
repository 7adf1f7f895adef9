"""The chat pipeline: plan -> make way -> read -> claim -> register -> assemble ->
upstream -> relay -> commit (the stages before the upstream: ``proxy.chat.stages``).

Stateless requests (no ``X-Task-Id``) go straight to the upstream, unchanged.
Stateful ones get the task's history and are recorded as what the caller received:
a reply cut short by a disconnect is stored as ``interrupted`` with only the text
that was sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from proxy.access.catalog import ResolvedProfile
from proxy.call import CallContext
from proxy.chat.grounding import Grounding, ground, retrieve_for_turn
from proxy.chat.meta import merge
from proxy.chat.profiles import apply_profile
from proxy.chat.relay import RelayPlan, StreamRelay
from proxy.chat.replay import replay_completion, replay_frames
from proxy.chat.reply import ReplyAccumulator
from proxy.chat.stages import (
    TurnDeps,
    assemble_turn,
    plan_request,
    read_task,
    resolve_claim,
    unassembled_turn,
)
from proxy.chat.turns import PendingTurn, TurnWriter
from proxy.context.assembly import said_turn, split_request
from proxy.context.budget import TokenCounter
from proxy.context.guard import FAILED, StoreGuard
from proxy.context.history import HistoryStore, StoredAnswer, TurnStart
from proxy.knowledge.retrieval import Retriever
from proxy.metrics import ProxyMetrics
from proxy.settings import Settings
from proxy.tools.registry import ToolRegistry
from proxy.tools.runner import ToolRunner
from proxy.tools.steps import complete_with_tools
from proxy.upstream.routes import CompletionStream, UpstreamRouter

log = logging.getLogger(__name__)


class ChatService:
    def __init__(
        self,
        settings: Settings,
        router: UpstreamRouter,
        history: HistoryStore,
        counter: TokenCounter,
        writer: TurnWriter,
        guard: StoreGuard,
        metrics: ProxyMetrics,
        *,
        tools: ToolRegistry | None = None,
        tool_runner: ToolRunner | None = None,
        retriever: Retriever | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.history = history
        self.counter = counter
        self.writer = writer
        self.guard = guard
        self.metrics = metrics
        self.tools = tools
        self.tool_runner = tool_runner
        self.retriever = retriever
        self.inflight = writer.inflight  # one owner of the task's turns in flight
        self.deps = TurnDeps(history, guard, self.inflight, writer, counter, metrics)

    @property
    def store_errors(self) -> int:
        return self.guard.errors

    # Entry points.

    async def complete(
        self, body: dict[str, Any], call: CallContext, profile: ResolvedProfile | None = None
    ) -> dict[str, Any]:
        """A non-streaming reply (after its server-side tool steps, if any)."""
        plan = await self._prepare(body, call, profile, time.perf_counter())
        if isinstance(plan, StoredAnswer):
            return replay_completion(plan)
        try:
            done = await complete_with_tools(
                self.router.complete, plan.body, plan.tools, call.request_id, self.metrics
            )
            response = done.response
            plan.meta.extend(done.visible)
        except asyncio.CancelledError:
            self._left_before_the_reply(plan.turn)
            raise
        except BaseException:
            self._not_committed(plan.turn)
            raise
        finally:
            self._forget_stream(plan.turn)
        if plan.turn is not None:
            reply = ReplyAccumulator.from_completion(response)
            final = reply.assistant_message(call.request_id)
            # Shielded: a caller leaving now must not cut the write short (all or nothing).
            await asyncio.shield(
                self.writer.finished(plan.turn, [*done.produced, final], reply.answer())
            )
        if plan.meta:
            response = {**response, "metainfo": merge([*plan.meta, response.get("metainfo") or {}])}
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
        plan = await self._prepare(body, call, profile, received_at or time.perf_counter())
        if isinstance(plan, StoredAnswer):
            return replay_frames(plan)
        opening: asyncio.Future[CompletionStream] | None = None
        filler_after = profile.spec.fast_first_words_ms if profile is not None else None
        try:
            if filler_after and profile is not None and profile.spec.filler_phrases:
                opening = asyncio.ensure_future(self.router.open_stream(plan.body))
                done, _ = await asyncio.wait({opening}, timeout=filler_after / 1000)
                if not done:  # the model is slow: say something while it thinks
                    plan.opening_filler = profile.spec.filler_phrases[0]
                    return self._relay(plan, opening)
                await asyncio.shield(opening)
            else:  # opened in this task: no task of its own, no extra trip round the loop
                opening = _resolved(await self.router.open_stream(plan.body))
        except asyncio.CancelledError:
            if opening is not None:
                opening.cancel()
            self._left_before_the_reply(plan.turn)
            raise
        except BaseException:
            self._forget_stream(plan.turn)
            self._not_committed(plan.turn)
            raise
        return self._relay(plan, opening)

    def _relay(
        self, plan: RelayPlan, opening: asyncio.Future[CompletionStream]
    ) -> AsyncIterator[bytes]:
        async def first() -> CompletionStream:
            return await opening

        def ended() -> None:
            if not opening.done():
                opening.cancel()
            self._forget_stream(plan.turn)

        # The relay's own generator is the response's: no wrapper, one layer less per event.
        relay = StreamRelay(
            plan, first, self.router.open_stream, self.writer, self.metrics, on_end=ended
        )
        return relay.frames()

    # Before the upstream call.

    async def _prepare(
        self,
        body: dict[str, Any],
        call: CallContext,
        profile: ResolvedProfile | None,
        received_at: float,
    ) -> StoredAnswer | RelayPlan:
        if profile is not None:
            body = apply_profile(body, profile)
        retrieval = self._start_retrieval(body, profile)
        try:
            prepared = await self._prepare_turn(body, call, profile, received_at)
        except BaseException:
            if retrieval is not None:
                retrieval.cancel()
            raise
        if retrieval is None:
            return prepared
        if isinstance(prepared, StoredAnswer):
            retrieval.cancel()
            return prepared
        try:
            grounding = await retrieval
        except asyncio.CancelledError:
            retrieval.cancel()
            self._left_before_the_reply(prepared.turn)
            raise
        except Exception as exc:  # retrieval is an addition: never fail the turn for it
            log.error("retrieval failed, answering without it: %r", exc)
            return prepared
        if grounding is not None:
            turn = prepared.turn
            messages = ground(
                prepared.body["messages"],
                grounding.context,
                turn.new_turn if turn is not None else None,
                call.request_id,
            )
            prepared.body = {**prepared.body, "messages": messages}
            prepared.meta.append({"sources": grounding.sources})
        return prepared

    def _start_retrieval(
        self, body: dict[str, Any], profile: ResolvedProfile | None
    ) -> asyncio.Task[Grounding | None] | None:
        """Retrieval starts now and runs while the history is loaded."""
        if profile is None or not profile.spec.knowledge_bases or self.retriever is None:
            return None
        return asyncio.ensure_future(
            retrieve_for_turn(
                self.retriever,
                profile.spec.knowledge_bases,
                body["messages"],
                self.settings,
                self.counter,
                self.metrics,
            )
        )

    async def _prepare_turn(
        self,
        body: dict[str, Any],
        call: CallContext,
        profile: ResolvedProfile | None,
        received_at: float,
    ) -> StoredAnswer | RelayPlan:
        """The stages before the upstream call (``proxy.chat.stages``), in order."""
        plan = plan_request(
            body,
            call,
            profile,
            self.settings,
            received_at,
            tools=self.tools,
            tool_runner=self.tool_runner,
        )
        if call.task_id is None:
            return plan  # stateless: straight to the upstream
        task_id = call.task_id
        messages = plan.body["messages"]
        await self.inflight.make_way(task_id, call.request_id)
        policy = profile.policy if profile is not None else self.settings.history
        reads = await read_task(
            self.deps, call, task_id, policy, messages, take_meta=plan.emit_meta
        )
        plan.meta.extend(reads.queued)
        if reads.store_refused:
            self.metrics.turns_not_recorded.labels("store_error").inc()
            log.warning("turn not recorded (store_error)", extra=call.log_fields())
            return plan  # stateless, not recorded (nothing registered)
        replay = await resolve_claim(self.deps, call, task_id, reads, policy)
        if replay is not None:
            return replay
        owner = self.inflight.register(
            task_id,
            call.request_id or reads.attempt_id,
            reads.attempt_id,
            claimed=call.request_id is not None,
        )
        profile_name = profile.name if profile is not None else None
        if reads.history is FAILED:
            plan.turn = unassembled_turn(
                call, task_id, reads, messages, policy, owner, profile_name
            )
            return plan
        assembled = await assemble_turn(
            self.deps, call, task_id, reads, reads.history, messages, policy, owner, profile_name
        )
        plan.body = {**plan.body, "messages": assembled.messages}
        plan.turn = assembled.turn
        return plan

    def left_before_start(self, body: dict[str, Any], call: CallContext) -> None:
        """The caller left before its turn started (the engine gave up on a request that
        a stalled replica reads only now). The user's words are kept, but the request is
        not claimed: a claim now could take over the retry the engine listens to. The
        commit adopts the request only where no other attempt owns it."""
        if call.task_id is None:
            return
        new_turn = said_turn(split_request(body.get("messages") or []).new_turn, call.request_id)
        unclaimed: asyncio.Future[TurnStart] | None = None
        if call.request_id is not None:
            unclaimed = asyncio.get_running_loop().create_future()
            unclaimed.cancel()  # its claim never ran: the commit adopts (``adopt``)
        attempt = uuid.uuid4().hex
        turn = PendingTurn(call, call.task_id, attempt, new_turn, None, claiming=unclaimed)
        self.writer.interrupted(turn, [])

    def _not_committed(self, turn: PendingTurn | None) -> None:
        """The turn ends without a commit (an error before the reply): its lease too."""
        if turn is not None and turn.attempt_id is not None:
            self.inflight.release(turn.task_id, turn.attempt_id)

    def _left_before_the_reply(self, turn: PendingTurn | None) -> None:
        """The caller left before any reply: its turn is kept (the user did speak)."""
        if turn is not None:
            self._forget_stream(turn)
            self.writer.interrupted(turn, [])

    @property
    def streams_in_flight(self) -> int:
        """Stateful turns in flight here (each is forgotten when it ends)."""
        return self.inflight.turns

    def _forget_stream(self, turn: PendingTurn | None) -> None:
        if turn is not None:
            key = turn.call.request_id or turn.attempt_id or ""
            self.inflight.forget(turn.task_id, key, turn.owner)

    async def drain(self) -> None:
        await self.writer.drain()


def _resolved(stream: CompletionStream) -> asyncio.Future[CompletionStream]:
    future: asyncio.Future[CompletionStream] = asyncio.get_running_loop().create_future()
    future.set_result(stream)
    return future
