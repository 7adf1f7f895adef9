"""The history store interface: per-task conversation turns, shared by all replicas.

Two implementations (``memory_store.MemoryHistoryStore`` for the embedded default,
``redis_store.RedisHistoryStore`` for production) pass one contract test suite.

Bookkeeping (request ids, interrupted flags, timestamps, cached token counts) lives
on ``StoredMessage`` and never reaches the upstream: ``StoredMessage.to_openai()``
returns only the standard OpenAI message fields.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

OPENAI_MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id")
# How far back from the tail a commit without a request id looks for its own first
# message (an earlier try that landed late): far more than a few seconds of a task adds.
PROBE_WINDOW = 64
# An attempt's in-flight lease: refreshed while it streams and until its commit resolves,
# so a live replica never loses it; a killed replica's lease ends within this time.
DEFAULT_LEASE_SECONDS = 4.0
# The attempts a request marker remembers having been taken over (an unconfirmed claim
# among them must not adopt the request back).
SUPERSEDED_KEPT = 8
# How long an erased task's tombstone refuses writes of attempts that began before the
# erasure: longer than any turn in flight (a long streamed reply, server-side tool steps)
# plus its commit's retries (``chat.commit_retry.RETRY_FOR_SECONDS``, 30 s) and a few
# leases. Attempts that begin after the erasure are never refused, so the task id may be
# used again at once; the hour only bounds how late a straggler can be.
ERASURE_TOMBSTONE_SECONDS = 3600


def new_message_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class StoredMessage:
    """One message of a task's history, with the proxy's bookkeeping."""

    role: str
    content: Any = None  # str, a list of content parts, or None (assistant with tool_calls)
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    # Bookkeeping, never sent upstream.
    id: str = field(default_factory=new_message_id)
    request_id: str | None = None
    interrupted: bool = False
    created_at: float = field(default_factory=time.time)
    tokens: int | None = None  # cached token count (see context.budget)
    source: str = "turn"  # "turn" | "seed" | "context" (operator) | "spoken" (905 with no match)
    # When the user had heard it: the ``at`` (engine clock) of the 905 that matched it.
    # A reply heard once is never corrected by another 905.
    heard_at: float | None = None
    # The model's reasoning for this reply, kept only when its profile asks
    # (``keep_reasoning``): never spoken, never part of a prompt (``to_openai``).
    reasoning_content: str | None = None

    def to_openai(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "content": self.content,
            "name": self.name,
            "tool_calls": self.tool_calls,
            "tool_call_id": self.tool_call_id,
            "request_id": self.request_id,
            "interrupted": self.interrupted,
            "created_at": self.created_at,
            "tokens": self.tokens,
            "source": self.source,
            "heard_at": self.heard_at,
            "reasoning_content": self.reasoning_content,
        }

    def copy(self) -> StoredMessage:
        """A shallow copy (positional, as ``from_dict``: a turn copies whole histories)."""
        return StoredMessage(
            self.role,
            self.content,
            self.name,
            self.tool_calls,
            self.tool_call_id,
            self.id,
            self.request_id,
            self.interrupted,
            self.created_at,
            self.tokens,
            self.source,
            self.heard_at,
            self.reasoning_content,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredMessage:
        # Positional, in the order of the fields (a round-trip test checks it): a turn
        # decodes its whole loaded history, and keywords cost a third more.
        get = data.get
        heard_at = get("heard_at")
        return cls(
            data["role"],
            get("content"),
            get("name"),
            get("tool_calls"),
            get("tool_call_id"),
            get("id") or new_message_id(),
            get("request_id"),
            bool(get("interrupted")),
            float(get("created_at") or time.time()),
            get("tokens"),
            get("source") or "turn",
            None if heard_at is None else float(heard_at),
            get("reasoning_content"),
        )


@dataclass(slots=True)
class TaskHistory:
    """What ``HistoryStore.load`` returns: the newest messages and the pinned summary."""

    messages: list[StoredMessage]
    summary: str | None = None
    total_messages: int = 0  # messages stored for the task, including ones not loaded


@dataclass(slots=True)
class StoredAnswer:
    """A finished reply, kept so that a retry with the same request id can be replayed."""

    content: str
    model: str | None = None
    finish_reason: str | None = "stop"
    completion_id: str | None = None


class ClaimState(enum.Enum):
    NEW = "new"  # first time this request id is seen: go ahead
    REPLAY = "replay"  # an earlier attempt finished: replay ``answer``, do not call upstream
    TAKEOVER = "takeover"  # an earlier attempt is still streaming: this attempt replaces it
    RETRY = "retry"  # an earlier attempt was interrupted: regenerate, replacing its messages


@dataclass(slots=True)
class RequestClaim:
    state: ClaimState
    attempt_id: str
    answer: StoredAnswer | None = None  # set for REPLAY
    previous_attempt_id: str | None = None  # set for TAKEOVER
    # What the turn start must know about the task, read in the same atomic step:
    pending_spoken: int = 0  # 905 texts waiting for a reply (``push_pending``)
    others_in_flight: int = 0  # other attempts of the task holding a live lease


@dataclass(slots=True)
class TurnStart:
    """What ``HistoryStore.begin_turn`` returns: a turn's claim, history and meta.info."""

    claim: RequestClaim | None  # None: the turn has no request id (nothing claimed)
    history: TaskHistory
    meta: list[dict[str, Any]] = field(default_factory=list)  # queued meta.info, taken


class LeaseHeld(Exception):
    """A commit that adopts a request found another attempt streaming it under a live
    lease: its owner may still commit. Retried later (the lease ends when its owner
    dies), never recorded twice."""


class TaskErased(Exception):
    """The task was erased after this write's attempt began: the write is refused (the
    erased history must not come back). Not a store failure."""


class SpokenOutcome(enum.Enum):
    APPENDED = "appended"  # no reply of the task in flight: joined the history at once
    PENDING = "pending"  # a reply is in flight: the text waits for it
    MOVED = "moved"  # the history changed since it was read: match again
    ERASED = "erased"  # the task was erased after the 905 arrived: dropped


class TaskHistoryStore(Protocol):
    """Per-task history. Every method refreshes the task's TTL when it writes."""

    async def load(self, task_id: str, limit: int) -> TaskHistory:
        """The newest ``limit`` messages (oldest first) and the summary, if any."""
        ...

    async def find_task_keys(self, task_id: str) -> list[str]:
        """Keys of live tasks (a turn, a summary or a request marker) that an engine's
        bare ``task_id`` names: itself and ``<app id>:<task_id>`` (sorted, bounded)."""
        ...

    async def claim_request(
        self,
        task_id: str,
        request_id: str,
        attempt_id: str | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        holder: str = "",
    ) -> RequestClaim:
        """Atomically register an attempt for ``request_id`` (see ``ClaimState``).

        The returned ``attempt_id`` is new for every call (``attempt_id``, when given:
        the caller knows it even if the call times out); only the latest attempt of a
        request id may commit. Unless replayed, the attempt gets an in-flight lease of
        ``lease_seconds`` (see ``hold``), and the attempt it replaces loses its lease.
        Claiming again with the same ``attempt_id`` changes nothing (NEW).
        """
        ...

    def begin_turn(
        self,
        task_id: str,
        request_id: str | None,
        attempt_id: str,
        *,
        limit: int,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        holder: str = "",
        take_meta: bool = False,
    ) -> Awaitable[TurnStart]:
        """A turn's start in one atomic step (one round trip): ``claim_request`` (with a
        request id), then ``load(task_id, limit)``, then ``take_meta`` if asked. A store
        may start it before returning (a future), so that no task must start it."""
        ...

    async def hold(
        self, task_id: str, attempt_id: str, lease_seconds: float, *, holder: str, create: bool
    ) -> int:
        """Register (``create``) or refresh the in-flight lease of ``attempt_id``: the
        task's one record of which replies are in flight, visible to every replica.
        A refresh after the lease was released adds nothing. Returns the task's pending
        905 count (``push_pending``).

        ``claim_request`` registers the lease itself (``lease_seconds`` given there);
        ``commit_turn`` and ``release`` end it.
        """
        ...

    async def release(self, task_id: str, attempt_id: str) -> None:
        """End the lease of an attempt that will not commit."""
        ...

    async def add_spoken(
        self,
        task_id: str,
        message: StoredMessage,
        item: dict[str, Any],
        *,
        after: str | None,
        started_at: float | None = None,
        settling: str | None = None,
    ) -> SpokenOutcome:
        """Atomically: if a reply of the task is in flight (a live lease), queue ``item``
        (``push_pending``); else append ``message``, provided the newest stored message
        is still ``after`` (its id; None: no messages), else change nothing (MOVED).
        ERASED (nothing written) if the task was erased at or after ``started_at``.
        ``settling``: the attempt of a turn that settles the 905 as it starts; its own
        lease is not a reply in flight (the 905 came before it)."""
        ...

    async def commit_turn(
        self,
        task_id: str,
        request_id: str | None,
        attempt_id: str | None,
        messages: list[StoredMessage],
        *,
        answer: StoredAnswer | None,
        seed: list[StoredMessage] | None = None,
        retry: bool = False,
        adopt: bool = False,
        started_at: float | None = None,
    ) -> bool:
        """Append one turn (user message(s), tool turns, assistant reply) atomically.

        - ``seed``: earlier rounds carried by the request; written first, only if the
          task has no messages yet (so they are never duplicated).
        - With a request id: refused (returns False, writes nothing) unless
          ``attempt_id`` is the latest attempt for the request, or no attempt of it is
          known (its claim was lost: a failover, a reset): the commit then makes the
          claim, since nothing else owns the request. Messages an earlier
          attempt of the same request id stored (an interrupted reply) are removed,
          so a retry never duplicates the user turn.
        - ``answer`` set: the request is marked finished (REPLAY for later claims);
          ``answer`` None: marked interrupted (RETRY for later claims).
        - Without a request id: a turn whose first message is already among the newest
          messages (an earlier try of this commit landed) is not written again.
        - ``retry``: this commit was tried before and may have landed after all (a
          timeout): if this attempt's commit is already recorded (its request marker is
          no longer ``streaming``), nothing changes. Returns True either way.
        - ``adopt``: the attempt's claim timed out (it may have run, or not). The commit
          then makes the claim itself where the claim would have made this attempt the
          owner: one left ``interrupted`` by an earlier attempt (whose
          messages are replaced), or one of another attempt whose lease ended (its
          replica died: the lease is adopted). It is refused where the request finished
          already or took over this attempt; while another attempt streams it under a
          live lease it raises ``LeaseHeld`` (try again later).
        - Committing is idempotent per attempt: once this attempt's commit is recorded,
          the same commit again changes nothing and returns True. It ends the attempt's
          lease whatever it returns.
        - ``started_at`` (wall clock, when the turn began): if the task was erased at or
          after that time (``erase``), nothing is written and ``TaskErased`` is raised.
        """
        ...

    async def append(self, task_id: str, messages: list[StoredMessage]) -> None:
        """Append messages outside a request (operator context, spoken text)."""
        ...

    async def update_message(
        self,
        task_id: str,
        message_id: str,
        *,
        content: Any,
        interrupted: bool,
        heard_at: float | None = None,
    ) -> bool:
        """Correct one stored message in place (the 905 spoken-text fix). False if absent.

        Sets ``content``, ``interrupted`` and ``heard_at`` (None clears it); the cached
        token count is dropped (recounted on the next read).
        """
        ...

    async def set_summary(self, task_id: str, summary: str, upto_message_id: str) -> bool:
        """Pin ``summary`` and drop every message up to and including ``upto_message_id``."""
        ...

    async def reset(self, task_id: str) -> None:
        """Forget the task's history, summary, request markers, leases and queues."""
        ...

    async def erase(self, task_id: str, at: float) -> None:
        """``reset``, and for ``ERASURE_TOMBSTONE_SECONDS`` refuse the writes of attempts
        that began at or before ``at`` (wall clock): a commit in flight or retried on
        another replica never brings the erased history back. Writes that begin later
        (the task id used again) are not affected."""
        ...

    async def expire(self, task_id: str, ttl_seconds: int) -> None:
        """Shorten the task's TTL (the task ended)."""
        ...

    async def ping(self) -> None:
        """Raise if the store is unreachable."""
        ...

    async def close(self) -> None: ...


class TaskQueues(Protocol):
    """Per-task queues, kept with the task (same TTL; a reset or an erasure drops them)."""

    async def push_pending(
        self, task_id: str, item: dict[str, Any], *, started_at: float | None = None
    ) -> bool:
        """Queue a JSON-able item for the task (a 905 spoken text awaiting its turn).
        False (nothing queued) if the task was erased at or after ``started_at``."""
        ...

    async def take_pending(self, task_id: str) -> list[dict[str, Any]]:
        """Atomically remove and return the task's queued items, oldest first."""
        ...

    async def push_meta(self, task_id: str, metainfo: dict[str, Any]) -> None:
        """Queue a meta.info object for the task's next reply (kept with the task: a
        reset or an erasure drops it)."""
        ...

    async def take_meta(self, task_id: str) -> list[dict[str, Any]]:
        """Atomically remove and return the task's queued meta.info, oldest first."""
        ...


class Counters(Protocol):
    """Shared counters and marks, not tied to a task (deduplication, rate limits)."""

    async def mark_once(self, key: str, ttl_seconds: int) -> bool:
        """True the first time ``key`` is marked within ``ttl_seconds`` (deduplication)."""
        ...

    async def hit(self, key: str, window_seconds: int) -> int:
        """Count one event under ``key`` in a window that starts at its first event."""
        ...


class HistoryStore(TaskHistoryStore, TaskQueues, Counters, Protocol):
    """What each implementation is: history, queues and counters, one store. A caller
    that needs only one of them takes that protocol."""
