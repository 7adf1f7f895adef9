"""Writing a turn to the task's history (and the durable transcript) when it ends."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

from proxy.call import CallContext
from proxy.chat.commit_retry import CommitRetrier, TurnCommit, retryable
from proxy.chat.inflight import InFlight
from proxy.context.budget import TokenCounter
from proxy.context.guard import FAILED, Failed, StoreGuard
from proxy.context.history import (
    HistoryStore,
    StoredAnswer,
    StoredMessage,
    TaskErased,
    TurnStart,
)
from proxy.context.summary import Summariser
from proxy.db.transcript import TranscriptWriter
from proxy.metrics import ProxyMetrics
from proxy.observability import tracing, turnlog
from proxy.settings import HistoryPolicy
from proxy.voice.spoken import SpokenTextReconciler

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingTurn:
    """What a stateful request will write to the history when it ends."""

    call: CallContext
    task_id: str
    attempt_id: str | None
    new_turn: list[StoredMessage]
    seed: list[StoredMessage] | None
    owner: asyncio.Task[Any] | None = None  # the task serving it, cancelled on takeover
    stored_messages: int = 0  # in the store before this turn
    policy: HistoryPolicy | None = None
    profile: str | None = None
    # The claim of ``attempt_id`` missed its time box and is still running: the commit
    # waits for its answer, and adopts the request only if it never comes.
    claiming: asyncio.Future[TurnStart] | None = None
    # When the turn began (wall clock): an erasure of the task after it refuses its writes.
    started_at: float = field(default_factory=time.time)


class TurnWriter:
    def __init__(
        self,
        history: HistoryStore,
        counter: TokenCounter,
        guard: StoreGuard,
        metrics: ProxyMetrics,
        inflight: InFlight,
        *,
        transcripts: TranscriptWriter | None = None,
        spoken: SpokenTextReconciler | None = None,
        summariser: Summariser | None = None,
    ) -> None:
        self._history = history
        self._counter = counter
        self._guard = guard
        self._metrics = metrics
        self._transcripts = transcripts
        self._spoken = spoken
        self._summariser = summariser
        self.inflight = inflight  # the task's writes, retries and leases in flight

    @property
    def retries(self) -> CommitRetrier:
        return self.inflight.retries

    @property
    def spoken(self) -> SpokenTextReconciler | None:
        return self._spoken

    async def finished(
        self, turn: PendingTurn, replies: list[StoredMessage], answer: StoredAnswer
    ) -> None:
        """The reply went out whole: written before ``[DONE]`` so the next turn sees it."""
        turnlog.sent(_said(replies), interrupted=False)
        with tracing.child("proxy.commit", {"proxy.interrupted": False}):
            await self._write(turn, [*turn.new_turn, *replies], answer)

    def interrupted(self, turn: PendingTurn, replies: list[StoredMessage]) -> None:
        """The caller left: what it received is written in the background (this task may
        be cancelled already); the next request of the task waits for it."""
        self._metrics.interruptions.inc()
        turnlog.sent(_said(replies), interrupted=True)
        spoken = sum(len(str(m.content or "")) for m in replies if m.role == "assistant")
        log.info("reply interrupted after %d characters", spoken, extra=turn.call.log_fields())
        write = self._write_interrupted(turn, [*turn.new_turn, *replies])
        self.inflight.write_in_background(turn.task_id, write)

    async def _write_interrupted(self, turn: PendingTurn, messages: list[StoredMessage]) -> None:
        # A task of its own, in a copy of the request's context: a child of its turn span.
        with tracing.child("proxy.commit", {"proxy.interrupted": True}):
            await self._write(turn, messages, None)

    async def settled(self, task_id: str) -> None:
        """Wait (briefly) for the task's writes in flight (see ``InFlight.settled``)."""
        await self.inflight.settled(task_id)

    async def _write(
        self, turn: PendingTurn, messages: list[StoredMessage], answer: StoredAnswer | None
    ) -> None:
        spoken: list[dict[str, Any]] = []  # 905s folded into ``messages``
        if self._spoken is not None:  # a 905 may have arrived before its turn
            messages, spoken = await self._fold_spoken(turn, messages, answer is None)
        for message in [*(turn.seed or ()), *messages]:
            self._counter.count_message(message)  # cached with the message, counted once
        commit = TurnCommit(
            turn.task_id,
            turn.call.request_id,
            turn.attempt_id,
            messages,
            answer,
            turn.seed,
            adopt=await self._claim_unknown(turn),
            started_at=turn.started_at,
            log_fields=turn.call.log_fields(),
            on_committed=lambda: self._after_commit(turn, messages, answer),
            on_resolved=lambda: self._lease_over(turn),
        )
        committed = await self._commit(commit)
        if committed is _ERASED:
            return  # nothing of it is kept: not the live history, not the transcript
        if committed is False:
            self.retries.not_recorded("superseded", commit)
            if spoken and self._spoken is not None:  # they belong to the recorded attempt
                await self._guard(self._spoken.requeue(turn.task_id, spoken))
            return
        if self._transcripts is not None:  # the durable record, even if the live store failed
            self._transcripts.submit(
                turn.call,
                [*(turn.seed or ()), *messages],
                profile=turn.profile,
                started_at=turn.started_at,  # an erasure after it discards the rows
            )
        if committed is True:
            self._after_commit(turn, messages, answer)

    async def _fold_spoken(
        self, turn: PendingTurn, messages: list[StoredMessage], interrupted: bool
    ) -> tuple[list[StoredMessage], list[dict[str, Any]]]:
        """The turn's messages with the 905s that arrived ahead of it folded in, and
        those 905s. It works on copies: if it fails or times out half-way (a slow
        store), the turn is written as it was and every 905 it took waits again."""
        assert self._spoken is not None
        folded: list[dict[str, Any]] = []
        taken: list[dict[str, Any]] = []
        copies = [dataclasses.replace(message) for message in messages]
        result = await self._guard(
            self._spoken.before_commit(
                turn.task_id, copies, interrupted=interrupted, folded=folded, taken=taken
            )
        )
        if result is not FAILED:
            return result, folded
        if taken:
            requeued = await self._guard(self._spoken.requeue(turn.task_id, taken))
            if requeued is FAILED:
                log.error(
                    "%d waiting 905(s) lost: the store failed while folding them in",
                    len(taken),
                    extra=turn.call.log_fields(),
                )
        return messages, []

    async def _claim_unknown(self, turn: PendingTurn) -> bool:
        """Whether the commit must adopt the request: its claim never gave an answer.

        A claim that missed its time box kept running: its answer (waited for here, off
        the caller's path) says whether this attempt owns the request."""
        claiming = turn.claiming
        if claiming is None:
            return False
        if not claiming.done():
            await asyncio.wait({claiming}, timeout=self.retries.attempt_timeout)
        if not claiming.done() or claiming.cancelled() or claiming.exception() is not None:
            if not claiming.done():
                claiming.cancel()
            return True
        return False  # this attempt's claim ran (REPLAY: the commit is refused, counted)

    def _lease_over(self, turn: PendingTurn) -> None:
        if turn.attempt_id is not None:
            self.inflight.lease_over(turn.task_id, turn.attempt_id)

    async def _commit(self, commit: TurnCommit) -> bool | Failed | _Erased:
        """True or False as ``commit_turn`` answers, FAILED: not recorded (yet), or
        ERASED: the task was erased after the turn began."""
        if self.retries.has_pending(commit.task_id):
            # An earlier commit of the task is being retried: this one lands after it.
            self.retries.submit(commit)  # (resolved there, counted there if dropped)
            return FAILED
        committed, error = await self._guard.attempt(commit.send(self._history, retry=False))
        if error is None:
            commit.resolved()
            return committed
        if isinstance(error, TaskErased):
            commit.resolved()
            self.retries.refused += 1
            self.retries.not_recorded("erased", commit)
            return _ERASED
        if retryable(error):
            if self.retries.submit(commit):
                log.warning(
                    "turn commit failed (%r); retrying in the background",
                    error,
                    extra=commit.log_fields,
                )
        else:
            log.error("turn not recorded: %r", error, extra=commit.log_fields)
            commit.resolved()
            self.retries.not_recorded("store_error", commit)
        return FAILED

    def _after_commit(
        self, turn: PendingTurn, messages: list[StoredMessage], answer: StoredAnswer | None
    ) -> None:
        if answer is not None and self._summariser is not None:
            stored = turn.stored_messages + len(turn.seed or ()) + len(messages)
            self._summariser.maybe_schedule(turn.task_id, stored, turn.policy)

    async def drain(self) -> None:
        """Wait for background writes and commit retries (graceful shutdown)."""
        await self.inflight.drain()


class _Erased(enum.Enum):
    ERASED = "erased"  # ``_commit``: the task was erased after the turn began


_ERASED: Final = _Erased.ERASED


def _said(replies: list[StoredMessage]) -> str:
    return "".join(str(m.content or "") for m in replies if m.role == "assistant")
