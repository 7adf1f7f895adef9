"""The stages of a turn before the upstream call, in the order ``ChatService`` runs them.

1. ``plan_request``: what goes upstream (the profile's tools), whether meta.info is sent.
2. ``InFlight.make_way``: earlier turns of the task end and their writes land.
3. ``read_task``: the claim of the request, the history and the queued meta.info, in
   one round trip to the store (``begin_turn``).
4. ``resolve_claim``: a finished request is replayed; a retry takes over its earlier
   attempt; 905s left waiting join the history.
5. ``InFlight.register``: the turn is in flight (its lease is kept, a new turn ends it).
6. ``assemble_turn``: the prompt from the history and the request, and the pending turn
   the commit will write (or, with a slow or unreachable store, the turn as the request
   carries it).

Then the relay (``proxy.chat.relay``) streams the reply and the commit
(``proxy.chat.turns``) writes what the caller received.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from proxy.access.catalog import ResolvedProfile
from proxy.call import CallContext
from proxy.chat.inflight import InFlight
from proxy.chat.meta import queue_for_task, requeue_late_meta, wants_meta_info
from proxy.chat.relay import RelayPlan
from proxy.chat.retried_turn import take_retried_turn
from proxy.chat.turns import PendingTurn, TurnWriter
from proxy.context.assembly import assemble, said_turn, seed_from, split_request
from proxy.context.budget import TokenCounter
from proxy.context.guard import FAILED, Failed, StoreGuard, log_store_error, transient
from proxy.context.heard import apply_in_place, heard_cuts
from proxy.context.history import (
    ClaimState,
    HistoryStore,
    RequestClaim,
    StoredAnswer,
    TaskHistory,
    TurnStart,
)
from proxy.metrics import ProxyMetrics
from proxy.observability import tracing, turnlog
from proxy.settings import HistoryPolicy, Settings
from proxy.tools.belt import tool_belt, with_belt
from proxy.tools.registry import ToolRegistry
from proxy.tools.runner import ToolRunner
from proxy.voice.spoken import SpokenFix

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TurnDeps:
    """What the stages work with: the store (time-boxed by the guard), this replica's
    turns in flight, the commit's writer, the token counter and the metrics."""

    history: HistoryStore
    guard: StoreGuard
    inflight: InFlight
    writer: TurnWriter
    counter: TokenCounter
    metrics: ProxyMetrics


# 1. Plan.


def plan_request(
    body: dict[str, Any],
    call: CallContext,
    profile: ResolvedProfile | None,
    settings: Settings,
    received_at: float,
    *,
    tools: ToolRegistry | None,
    tool_runner: ToolRunner | None,
) -> RelayPlan:
    """What goes upstream before any history: the body with the profile's server-side
    tools next to the caller's own (``proxy.tools.belt``)."""
    belt = None
    if profile is not None:
        spec = profile.spec
        belt = tool_belt(
            body, spec.tools, spec.filler_phrases, tools, tool_runner, settings.tool_max_steps
        )
    emit_meta = wants_meta_info(
        settings.meta_info_events,
        call,
        profile.spec.meta_info_events if profile is not None else None,
    )
    plan = RelayPlan(
        body=body,
        model=str(body.get("model")),
        received_at=received_at,
        emit_meta=emit_meta,
        keep_reasoning=profile is not None and profile.spec.keep_reasoning,
    )
    plan.tools = belt
    if belt is not None:
        plan.body = with_belt(body, belt)
    return plan


# 3. Read the task.


@dataclass(slots=True)
class TaskReads:
    """The turn's start as the store gave it (``begin_turn``), or FAILED with its error."""

    attempt_id: str
    started_at: float  # wall clock: an erasure of the task after it refuses the writes
    claim: RequestClaim | Failed | None  # None: no request id, nothing claimed
    history: TaskHistory | Failed
    error: Exception | None = None
    queued: list[dict[str, Any]] = field(default_factory=list)  # meta.info to deliver
    # The start, while its claim's outcome is unknown (it missed its time box and runs
    # on): the commit waits for it. None without a request id, or once the claim answered.
    claiming: asyncio.Future[TurnStart] | None = None

    @property
    def store_refused(self) -> bool:
        """The store refused the turn's start as wrong (a configuration fault: an ACL, a
        cluster misrouting, another application's key), not for being slow or down: the
        turn is answered statelessly and not recorded, since retrying cannot help. A slow
        or unreachable store (a timeout, a refused connection, a failover) is transient:
        the turn is answered without the history and recorded by the commit retries."""
        return self.error is not None and not transient(self.error)


async def read_task(
    deps: TurnDeps,
    call: CallContext,
    task_id: str,
    policy: HistoryPolicy,
    messages: list[dict[str, Any]],
    *,
    take_meta: bool,
) -> TaskReads:
    """The claim, the history and the queued meta.info: one store round trip. If the
    caller leaves while it runs (a stalled store), the user turn is written all the
    same: the user spoke."""
    # Chosen here, so that it is known even if the claim times out (and runs later).
    attempt_id = uuid.uuid4().hex
    began = time.time()
    leases = deps.inflight.leases
    # The Redis store returns a future (on its lane, the script is already sent when it
    # returns); the embedded store a coroutine, which becomes a task here.
    starting = asyncio.ensure_future(
        deps.history.begin_turn(
            task_id,
            call.request_id,
            attempt_id,
            limit=policy.load_limit,
            lease_seconds=leases.lease_seconds,
            holder=leases.holder,
            take_meta=take_meta,  # queued meta.info waits for a caller that gets it
        )
    )
    # With a request id the start claims it: shielded, so that a start that misses its
    # time box still runs to its end, and the commit learns from it whether this
    # attempt owns the request (meta.info it takes late goes back to the queue).
    claiming = starting if call.request_id is not None else None
    try:
        with tracing.child("proxy.store", {"proxy.task_key": task_id}):
            start, error = await deps.guard.attempt(
                asyncio.shield(starting) if claiming else starting
            )
    except asyncio.CancelledError:  # the caller left (a stalled store): the user spoke
        if claiming is not None:
            requeue_late_meta(deps.history, task_id, claiming)
            new_turn = said_turn(split_request(messages).new_turn, call.request_id)
            turn = PendingTurn(
                call, task_id, attempt_id, new_turn, None, claiming=claiming, started_at=began
            )
            deps.writer.interrupted(turn, [])
        raise
    if start is FAILED:
        if error is not None:
            log_store_error(error, call.log_fields())
        if claiming is not None:
            requeue_late_meta(deps.history, task_id, claiming)
        claim: RequestClaim | Failed | None = FAILED if claiming else None
        return TaskReads(attempt_id, began, claim, FAILED, error, claiming=claiming)
    return TaskReads(
        attempt_id, began, start.claim, start.history, queued=start.meta, claiming=claiming
    )


# 4. Resolve the claim.


async def resolve_claim(
    deps: TurnDeps, call: CallContext, task_id: str, reads: TaskReads, policy: HistoryPolicy
) -> StoredAnswer | None:
    """The request's answer if it finished already (a replay), else None: this attempt
    owns the request (an earlier attempt still streaming it here ends, and 905s that
    waited for a reply no longer in flight join the history, which is read again)."""
    claim = reads.claim
    if claim is None or claim is FAILED:
        return None  # no request id, or the claim's outcome is unknown (``claiming``)
    if claim.state is ClaimState.REPLAY and claim.answer is not None:
        log.info("replaying a finished request", extra=call.log_fields())
        deps.metrics.replays.inc()
        turnlog.replayed()
        for item in reads.queued:  # not delivered: kept for the next reply
            await deps.guard(queue_for_task(deps.history, task_id, item))
        return claim.answer
    if claim.state is ClaimState.TAKEOVER and call.request_id is not None:
        deps.inflight.take_over(task_id, call.request_id)
    if claim.pending_spoken and not claim.others_in_flight:
        reads.history = await _settle_spoken(deps, task_id, reads, policy.load_limit)
    reads.claiming = None  # confirmed
    return None


async def _settle_spoken(
    deps: TurnDeps, task_id: str, reads: TaskReads, limit: int
) -> TaskHistory | Failed:
    """905 texts wait for a reply in flight; none is but this turn's own (the one they
    waited for died or was written before they were queued): they join the history
    now, before this turn's user message, and the history is read again."""
    spoken = deps.writer.spoken
    if spoken is None or await deps.guard(spoken.settle(task_id, reads.attempt_id)) is FAILED:
        return reads.history
    return await deps.guard(deps.history.load(task_id, limit))


# 6. Assemble.


@dataclass(slots=True)
class AssembledTurn:
    messages: list[dict[str, Any]]  # the prompt that goes upstream
    turn: PendingTurn  # what the commit writes


def unassembled_turn(
    call: CallContext,
    task_id: str,
    reads: TaskReads,
    messages: list[dict[str, Any]],
    policy: HistoryPolicy,
    owner: asyncio.Task[Any] | None,
    profile: str | None,
) -> PendingTurn:
    """The store is slow or unreachable, not refusing: the reply is made without the
    history (as the request carries it), and recorded all the same (the commit retries
    until the store is back), since the user hears it."""
    parts = split_request(messages)
    return PendingTurn(
        call,
        task_id,
        reads.attempt_id,
        said_turn(parts.new_turn, call.request_id),
        seed_from(parts.earlier, limit=policy.load_limit),
        owner,
        policy=policy,
        profile=profile,
        claiming=reads.claiming,
        started_at=reads.started_at,
    )


async def assemble_turn(
    deps: TurnDeps,
    call: CallContext,
    task_id: str,
    reads: TaskReads,
    history: TaskHistory,
    messages: list[dict[str, Any]],
    policy: HistoryPolicy,
    owner: asyncio.Task[Any] | None,
    profile: str | None,
) -> AssembledTurn:
    """The prompt: the task's history (an earlier attempt of this request left out, the
    engine's evidence of what was heard applied) with the request's new turn."""
    tracing.annotate_round(history.messages, history.total_messages)
    if call.request_id is not None:  # an earlier attempt's turn is replaced, not repeated
        kept = [m for m in history.messages if m.request_id != call.request_id]
        # The count places the window's block cuts: it must shrink with the list.
        history.total_messages -= len(history.messages) - len(kept)
        history.messages = kept
    parts = split_request(messages)
    fixes = heard_cuts(parts.earlier, history.messages)
    if fixes:  # the engine's history says the user heard less than was stored
        await _record_heard(deps, task_id, fixes, call)
    # The same turn again (no request id)? Its stored user turn stands for it.
    retried = take_retried_turn(history, parts.new_turn)
    prompt = assemble(
        parts, history, policy=policy, counter=deps.counter, request_id=call.request_id
    )
    if retried:
        prompt.new_turn = prompt.new_turn[1:]  # stored already: never added twice
    deps.metrics.history_turns.observe(len(prompt.history_used))
    deps.metrics.history_tokens.observe(sum(m.tokens or 0 for m in prompt.history_used))
    turn = PendingTurn(
        call,
        task_id,
        reads.attempt_id,
        prompt.new_turn,
        prompt.seed,
        owner,
        history.total_messages,
        policy,
        profile,
        claiming=reads.claiming,
        started_at=reads.started_at,
    )
    return AssembledTurn(prompt.messages, turn)


async def _record_heard(
    deps: TurnDeps, task_id: str, fixes: list[SpokenFix], call: CallContext
) -> None:
    log.info("engine history cuts %d stored message(s)", len(fixes), extra=call.log_fields())
    spoken = deps.writer.spoken
    if spoken is not None:
        await deps.guard(spoken.record_heard(task_id, fixes))
    else:
        for fix in fixes:
            await deps.guard(
                deps.history.update_message(
                    task_id,
                    fix.message.id,
                    content=fix.content,
                    interrupted=fix.interrupted,
                    heard_at=fix.message.heard_at,
                )
            )
    apply_in_place(fixes)
