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
import uuid
from collections.abc import AsyncIterator
from typing import Any

from proxy.access.catalog import ResolvedProfile
from proxy.call import CallContext
from proxy.chat.grounding import Grounding, ground, retrieve_for_turn
from proxy.chat.inflight import LeaseKeeper, replica_id
from proxy.chat.meta import merge, queue_for_task, requeue_late_meta, wants_meta_info
from proxy.chat.profiles import apply_profile
from proxy.chat.relay import RelayPlan, StreamRelay, ToolBelt
from proxy.chat.replay import replay_completion, replay_frames
from proxy.chat.reply import ReplyAccumulator
from proxy.chat.retried_turn import take_retried_turn
from proxy.chat.turns import PendingTurn, TurnWriter
from proxy.context.assembly import assemble, seed_from, split_request, to_stored
from proxy.context.budget import TokenCounter
from proxy.context.guard import FAILED, Failed, StoreGuard, log_store_error, slow
from proxy.context.heard import apply_in_place, heard_cuts
from proxy.context.history import (
    ClaimState,
    HistoryStore,
    RequestClaim,
    StoredAnswer,
    TaskHistory,
)
from proxy.knowledge.retrieval import Retriever
from proxy.metrics import ProxyMetrics
from proxy.observability import tracing, turnlog
from proxy.settings import Settings
from proxy.tools.belt import tool_belt, with_belt
from proxy.tools.steps import complete_with_tools
from proxy.upstream.routes import CompletionStream, UpstreamRouter
from proxy.voice.spoken import SpokenFix

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
        tools: Any = None,  # proxy.tools.registry.ToolRegistry
        tool_runner: Any = None,  # proxy.tools.runner.ToolRunner
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
        self._streams: dict[tuple[str, str], asyncio.Task[Any]] = {}
        # The store holds the task's in-flight record; this keeps this replica's leases.
        self.leases = writer.leases or LeaseKeeper(
            history, guard, lease_seconds=settings.lease_seconds, holder=replica_id()
        )
        writer.leases = self.leases

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

        relay = StreamRelay(plan, first, self.router.open_stream, self.writer, self.metrics)

        async def frames() -> AsyncIterator[bytes]:
            try:
                async for chunk in relay.frames():
                    yield chunk
            finally:
                if not opening.done():
                    opening.cancel()
                self._forget_stream(plan.turn)

        return frames()

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
        plan = RelayPlan(
            body=body,
            model=str(body.get("model")),
            received_at=received_at,
            emit_meta=wants_meta_info(
                self.settings.meta_info_events,
                call,
                profile.spec.meta_info_events if profile is not None else None,
            ),
            tools=self._tool_belt(body, profile),
        )
        if plan.tools is not None:
            plan.body = body = with_belt(body, plan.tools)
        if call.task_id is None:
            return plan
        task_id = call.task_id
        await self._abandon_earlier_streams(task_id, call.request_id)
        await self.writer.settled(task_id)  # an interrupted turn may still be being written

        # The claim, the history and the queued meta.info: one store round trip.
        policy = profile.policy if profile is not None else self.settings.history
        # Chosen here, so that it is known even if the claim times out (and runs later).
        attempt_id = uuid.uuid4().hex
        began = time.time()  # an erasure of the task after this refuses the turn's writes
        starting = asyncio.ensure_future(
            self.history.begin_turn(
                task_id,
                call.request_id,
                attempt_id,
                limit=policy.load_limit,
                lease_seconds=self.leases.lease_seconds,
                holder=self.leases.holder,
                take_meta=plan.emit_meta,  # queued meta.info waits for a caller that gets it
            )
        )
        # With a request id the start claims it: shielded, so that a start that misses its
        # time box still runs to its end, and the commit learns from it whether this
        # attempt owns the request (meta.info it takes late goes back to the queue).
        claiming = starting if call.request_id is not None else None
        try:
            with tracing.child("proxy.store", {"proxy.task_key": task_id}):
                start, error = await self.guard.attempt(
                    asyncio.shield(starting) if claiming else starting
                )
        except asyncio.CancelledError:  # the caller left (a stalled store): the user spoke
            if claiming is not None:
                requeue_late_meta(self.history, task_id, claiming)
                said = split_request(body["messages"]).new_turn
                new_turn = [to_stored(m, request_id=call.request_id, source="turn") for m in said]
                turn = PendingTurn(
                    call, task_id, attempt_id, new_turn, None, claiming=claiming, started_at=began
                )
                self.writer.interrupted(turn, [])
            raise
        claim: RequestClaim | Failed | None
        history: TaskHistory | Failed
        queued: list[dict[str, Any]]
        if start is FAILED:
            claim, history, queued = (FAILED if claiming else None), FAILED, []
            if error is not None:
                log_store_error(error, call.log_fields())
            if claiming is not None:
                requeue_late_meta(self.history, task_id, claiming)
            if error is not None and not slow(error):
                self.metrics.turns_not_recorded.labels("store_unavailable").inc()
                log.warning("turn not recorded (store_unavailable)", extra=call.log_fields())
                return plan  # the store is down: stateless, not recorded (nothing registered)
        else:
            claim, history, queued = start.claim, start.history, start.meta
        plan.meta.extend(queued)
        owner = asyncio.current_task()
        if claim is not None and claim is not FAILED:
            assert call.request_id is not None
            if claim.state is ClaimState.REPLAY and claim.answer is not None:
                log.info("replaying a finished request", extra=call.log_fields())
                self.metrics.replays.inc()
                turnlog.replayed()
                for item in queued:  # not delivered: kept for the next reply
                    await self.guard(queue_for_task(self.history, task_id, item))
                return claim.answer
            if claim.state is ClaimState.TAKEOVER:
                self._cancel_stream(task_id, call.request_id)
            if claim.pending_spoken and not claim.others_in_flight:
                history = await self._settle_spoken(task_id, policy.load_limit, history)
            claiming = None  # confirmed
        self.leases.keep(task_id, attempt_id, registered=call.request_id is not None)
        if owner is not None:  # every turn in flight, so that the next one can end it
            self._streams[(task_id, call.request_id or attempt_id)] = owner
        profile_name = profile.name if profile is not None else None
        if history is FAILED:
            # The store is slow, not gone: the reply is made without the history (as the
            # request carries it), and recorded all the same, since the user hears it.
            parts = split_request(body["messages"])
            plan.turn = PendingTurn(
                call,
                task_id,
                attempt_id,
                [to_stored(m, request_id=call.request_id, source="turn") for m in parts.new_turn],
                seed_from(parts.earlier, limit=policy.load_limit),
                owner,
                policy=policy,
                profile=profile_name,
                claiming=claiming,
                started_at=began,
            )
            return plan
        assert isinstance(history, TaskHistory)
        tracing.annotate_round(history.messages, history.total_messages)
        if call.request_id is not None:  # an earlier attempt's turn is replaced, not repeated
            kept = [m for m in history.messages if m.request_id != call.request_id]
            # The count places the window's block cuts: it must shrink with the list.
            history.total_messages -= len(history.messages) - len(kept)
            history.messages = kept
        parts = split_request(body["messages"])
        fixes = heard_cuts(parts.earlier, history.messages)
        if fixes:  # the engine's history says the user heard less than was stored
            await self._record_heard(task_id, fixes, call)
        # The same turn again (no request id)? Its stored user turn stands for it.
        retried = take_retried_turn(history, parts.new_turn)
        prompt = assemble(
            parts,
            history,
            policy=policy,
            counter=self.counter,
            request_id=call.request_id,
        )
        if retried:
            prompt.new_turn = prompt.new_turn[1:]  # stored already: never added twice
        self.metrics.history_turns.observe(len(prompt.history_used))
        self.metrics.history_tokens.observe(sum(m.tokens or 0 for m in prompt.history_used))
        plan.body = {**body, "messages": prompt.messages}
        plan.turn = PendingTurn(
            call,
            task_id,
            attempt_id,
            prompt.new_turn,
            prompt.seed,
            owner,
            history.total_messages,
            policy,
            profile_name,
            claiming=claiming,
            started_at=began,
        )
        return plan

    def _tool_belt(self, body: dict[str, Any], profile: ResolvedProfile | None) -> ToolBelt | None:
        """Server-side tools: the profile's, next to the caller's own (proxy.tools.belt)."""
        if profile is None:
            return None
        spec = profile.spec
        return tool_belt(
            body,
            spec.tools,
            spec.filler_phrases,
            self.tools,
            self.tool_runner,
            self.settings.tool_max_steps,
        )

    async def _abandon_earlier_streams(self, task_id: str, request_id: str | None) -> None:
        """A new turn means the engine moved on: a reply of this task still streaming here
        was abandoned (its caller may have left a moment ago and the disconnect not been
        seen yet). End it first, so that its interrupted turn is written before this turn
        reads the history. Requests without a request id count too: a client's retry after
        its own timeout must find the abandoned attempt's user turn stored, not race it."""
        earlier = [
            owner
            for (task, rid), owner in self._streams.items()
            if task == task_id and rid != request_id and not owner.done()
        ]
        for owner in earlier:
            owner.cancel()
        if earlier:
            await asyncio.wait(earlier, timeout=self.guard.timeout)

    def _cancel_stream(self, task_id: str, request_id: str) -> None:
        earlier = self._streams.pop((task_id, request_id), None)
        if earlier is not None and not earlier.done():
            log.info("a retry takes over a request still streaming", extra={"task_id": task_id})
            earlier.cancel()

    async def _settle_spoken(
        self, task_id: str, limit: int, history: TaskHistory | Any
    ) -> TaskHistory | Any:
        """905 texts wait for a reply in flight; none is (the one they waited for died or
        was written before they were queued): they join the history now, before this
        turn's user message, and the history is read again."""
        spoken = self.writer.spoken
        if spoken is None or await self.guard(spoken.settle(task_id)) is FAILED:
            return history
        return await self.guard(self.history.load(task_id, limit))

    async def _record_heard(self, task_id: str, fixes: list[SpokenFix], call: CallContext) -> None:
        log.info("engine history cuts %d stored message(s)", len(fixes), extra=call.log_fields())
        spoken = self.writer.spoken
        if spoken is not None:
            await self.guard(spoken.record_heard(task_id, fixes))
        else:
            for fix in fixes:
                await self.guard(
                    self.history.update_message(
                        task_id,
                        fix.message.id,
                        content=fix.content,
                        interrupted=fix.interrupted,
                        heard_at=fix.message.heard_at,
                    )
                )
        apply_in_place(fixes)

    def _not_committed(self, turn: PendingTurn | None) -> None:
        """The turn ends without a commit (an error before the reply): its lease too."""
        if turn is not None and turn.attempt_id is not None:
            task = asyncio.ensure_future(self.leases.release(turn.task_id, turn.attempt_id))
            task.add_done_callback(lambda done: done.cancelled() or done.exception())

    def _left_before_the_reply(self, turn: PendingTurn | None) -> None:
        """The caller left before any reply: its turn is kept (the user did speak)."""
        if turn is not None:
            self._forget_stream(turn)
            self.writer.interrupted(turn, [])

    @property
    def streams_in_flight(self) -> int:
        """Stateful turns in flight here (each is forgotten when it ends)."""
        return len(self._streams)

    def _forget_stream(self, turn: PendingTurn | None) -> None:
        if turn is not None:
            key = (turn.task_id, turn.call.request_id or turn.attempt_id or "")
            if self._streams.get(key) is turn.owner:
                del self._streams[key]

    async def drain(self) -> None:
        await self.writer.drain()
        await self.leases.close()


def _resolved(stream: CompletionStream) -> asyncio.Future[CompletionStream]:
    future: asyncio.Future[CompletionStream] = asyncio.get_running_loop().create_future()
    future.set_result(stream)
    return future
