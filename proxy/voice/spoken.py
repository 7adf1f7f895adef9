"""Keeping history to what the user heard: the engine's 905 "bot finished speaking" text.

A 905 carries the text the bot actually said in a round. The round's reply is every
assistant message of one turn, heard as one sequence: a tool turn's filler, then its
answer, stored apart around the tool call and result. A 905 whose text begins that
sequence settles it: what was not heard is cut away (the message where the speech
stopped keeps the heard part and is marked ``interrupted``; messages after it are
emptied), and the reply is marked heard (``heard_at``, the 905's time).

Which reply a 905 belongs to: the bot speaks rounds one after another, and each 905
comes after the one of the round before. So a reply already heard is never corrected
again. Reading the history newest first, a reply heard by an *earlier* 905 means this
905 belongs to a newer reply that is not written yet (the stream is still being
committed, perhaps on another replica; the engine does not order its callbacks after
its LLM connection); a reply heard by a *later* 905 means this one was delivered late
(retried) and belongs further back. Both times are the engine's clock (``EventMsTs``).

A 905 that matches no written reply is settled at once from the task's one record of
replies in flight (the in-flight leases every replica shares, ``HistoryStore.hold``):

- no reply of the task is in flight: it is text the proxy never generated (the welcome
  message, ``ServerPushText``) and joins the history now, as an assistant turn, because
  the model must know what the user heard it say;
- a reply is in flight (on any replica): it waits in the task's pending queue, and that
  reply's commit applies it (to the reply, or in its place in time before or after it).

The check and the append are one atomic store step that also verifies the history did
not change since it was matched (else it is matched again), so a reply written in
between is corrected, never doubled by a fragment. What still waits when nothing is in
flight any more (its reply died with its replica) is settled when the next turn of the
task starts, or after ``grace_seconds`` at the latest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from proxy.call import CallContext
from proxy.context.history import HistoryStore, SpokenOutcome, StoredMessage
from proxy.context.matching import content_text, normalise
from proxy.db.transcript import TranscriptWriter

log = logging.getLogger(__name__)

RECENT_MESSAGES = 40  # how far back a 905 may reach
MATCH_ATTEMPTS = 4  # a turn written between matching and appending: match again


@dataclass(slots=True)
class SpokenFix:
    """What one message of a reply becomes once a 905 says what was heard of it."""

    message: StoredMessage
    content: Any
    interrupted: bool

    @property
    def changed(self) -> bool:
        return (self.content, self.interrupted) != (self.message.content, self.message.interrupted)


class SpokenTextReconciler:
    def __init__(
        self,
        store: HistoryStore,
        transcripts: TranscriptWriter | None,
        *,
        grace_seconds: float = 2.0,
    ) -> None:
        self._store = store
        self._transcripts = transcripts
        self._grace = grace_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self.corrected = 0
        self.appended = 0

    async def on_spoken(
        self, task_id: str, text: str, *, at: float, received_at: float | None = None
    ) -> str:
        """Apply a 905; returns "corrected", "unchanged", "appended", "pending" or
        "erased" (the task was erased while it was being applied: dropped)."""
        if not normalise(text):
            return "unchanged"  # nothing was said
        # ``received_at``: when the 905 arrived; a task erased since refuses its writes.
        started = time.time() if received_at is None else received_at
        return await self._resolve(task_id, {"text": text, "at": at}, started)

    async def _resolve(
        self,
        task_id: str,
        item: dict[str, Any],
        started_at: float,
        settling: str | None = None,
    ) -> str:
        text, at = item["text"], float(item["at"])
        for _ in range(MATCH_ATTEMPTS):
            history = await self._store.load(task_id, RECENT_MESSAGES)
            outcome = await self._correct(task_id, text, at, history.messages)
            if outcome is not None:
                return outcome
            newest = history.messages[-1].id if history.messages else None
            message = _spoken_message(item)
            last = history.messages[-1] if history.messages else None
            if (
                last is not None
                and last.role == "user"
                and last.source == "turn"
                and last.request_id is not None
                and last.created_at < at
            ):
                # A turn cut short before any text was counted as sent, heard after
                # all: this is its reply.
                message.request_id, message.interrupted = last.request_id, True
            added = await self._store.add_spoken(
                task_id, message, item, after=newest, started_at=started_at, settling=settling
            )
            if added is SpokenOutcome.ERASED:
                return "erased"
            if added is SpokenOutcome.APPENDED:
                self._recorded(task_id, message)
                return "appended"
            if added is SpokenOutcome.PENDING:
                self._spawn(self._settle_later(task_id))
                return "pending"
        if not await self._store.push_pending(task_id, item, started_at=started_at):
            return "erased"  # the history kept moving (above): later, unless erased
        self._spawn(self._settle_later(task_id))
        return "pending"

    async def on_gave_up(self, task_id: str, *, at: float, received_at: float | None = None) -> str:
        """The engine gave up on the round's LLM request (its timeout, 30200): the user
        heard nothing of that reply, whatever the proxy streamed after. The reply of the
        newest turn that started before ``at`` is emptied (``interrupted``) and marked
        heard at ``at``; if it is not written yet, its commit does that."""
        item = {"text": "", "at": at, "gave_up": True}
        started_at = time.time() if received_at is None else received_at
        if await self._gave_up_written(task_id, at):
            return "corrected"
        if not await self._store.push_pending(task_id, item, started_at=started_at):
            return "erased"  # its reply is (or was) in flight, unless the task was erased
        self._spawn(self._settle_later(task_id))
        return "pending"

    async def _gave_up_written(self, task_id: str, at: float) -> bool:
        history = await self._store.load(task_id, RECENT_MESSAGES)
        group = reply_started_before(history.messages, at)
        if group is None or heard_at(group) is not None:
            return False
        fixes = [SpokenFix(m, "" if m.content is not None else None, True) for m in group]
        await self._apply(task_id, fixes, at)
        return True

    async def settle(self, task_id: str, settling: str | None = None) -> None:
        """Settle the task's waiting 905s now (a turn starts and no reply is in flight).
        ``settling``: the attempt of the turn that starts; its own lease, made by its
        claim, is not a reply those 905s wait for."""
        for item in await self._store.take_pending(task_id):
            if item.get("gave_up"):
                await self._gave_up_written(task_id, float(item["at"]))
            else:
                await self._resolve(task_id, item, time.time(), settling)

    async def before_commit(
        self,
        task_id: str,
        messages: list[StoredMessage],
        *,
        interrupted: bool = False,
        folded: list[dict[str, Any]] | None = None,
        taken: list[dict[str, Any]] | None = None,
    ) -> list[StoredMessage]:
        """A turn is about to be written: fold in any 905 that arrived ahead of it.

        A waiting 905 that the turn's reply begins with settles it; one the user heard
        before this turn started settles the written reply it belongs to, else goes in
        front of it (its place in time); others keep waiting. ``folded`` gets the 905s
        that now live only in ``messages``: if the commit is refused, ``requeue`` them.
        ``taken`` gets every 905 taken from the queue, as soon as it is taken: if this
        call fails or times out half-way, ``requeue`` them (the messages it returns are
        then unknown, and the caller commits its own, unchanged).
        """
        pending = await self._store.take_pending(task_id)
        if taken is not None:
            taken.extend(pending)
        if not pending:
            return messages
        groups = reply_groups(messages)
        reply = groups[-1] if groups else None
        started = messages[0].created_at
        earlier: list[StoredMessage] = []
        later: list[StoredMessage] = []
        seen: set[tuple[str, float, bool]] = set()
        for item in sorted(pending, key=lambda item: float(item["at"])):
            text, at = item["text"], float(item["at"])
            if (text, at, bool(item.get("gave_up"))) in seen:
                continue  # the same 905 queued twice (applied again after a timeout)
            seen.add((text, at, bool(item.get("gave_up"))))
            if item.get("gave_up"):  # the engine gave up on this turn: nothing was heard
                if reply and heard_at(reply) is None and started < at:
                    for message in reply:
                        message.content = "" if message.content is not None else None
                        message.interrupted, message.heard_at = True, at
                    self.corrected += 1
                    _fold(folded, item)
                else:  # an older turn's, written already: settled from the history
                    await self._store.push_pending(task_id, item)
                continue
            fixes = spoken_fixes(reply, text) if reply and heard_at(reply) is None else None
            if fixes is not None:
                if any(fix.changed for fix in fixes):
                    self.corrected += 1
                for fix in fixes:
                    fix.message.content, fix.message.interrupted = fix.content, fix.interrupted
                    fix.message.heard_at = at
                _fold(folded, item)
            elif at < started:
                # Heard before this turn: a written reply's, whose commit landed after the
                # 905 was queued (a slow store), is settled in place; else it goes in front.
                history = await self._store.load(task_id, RECENT_MESSAGES)
                if await self._correct(task_id, text, at, history.messages) is None:
                    earlier.append(_spoken_message(item))
                    self.appended += 1
                    _fold(folded, item)
            else:  # said while this reply was being made: after it
                message = _spoken_message(item)
                if reply is None and interrupted:  # the turn's own reply, heard after all
                    message.request_id, message.interrupted = messages[0].request_id, True
                later.append(message)
                self.appended += 1
                _fold(folded, item)
        return [*earlier, *messages, *later]

    async def requeue(self, task_id: str, items: list[dict[str, Any]]) -> None:
        """A commit that folded these 905s in was refused (another attempt of its request
        owns it): they wait again, for the reply that is recorded, or the next turn."""
        for item in items:
            await self._store.push_pending(task_id, item)
        if items:
            self._spawn(self._settle_later(task_id))

    async def _correct(
        self, task_id: str, text: str, at: float, messages: list[StoredMessage]
    ) -> str | None:
        """Settle the stored reply the 905 belongs to; None if it is not stored (yet)."""
        for group in reversed(reply_groups(messages)):
            heard = heard_at(group)
            if heard is not None:
                if heard == at:
                    return "unchanged"  # this very 905 again (a retry past deduplication)
                if heard < at:
                    return None  # heard in an earlier round: this 905's reply is newer
                continue  # heard in a later round: this 905 came late, its reply is older
            if group[0].source == "spoken":
                continue  # added by a 905 before heard_at was recorded: never corrected
            fixes = spoken_fixes(group, text)
            if fixes is not None:
                return await self._apply(task_id, fixes, at)
        return None

    async def record_heard(self, task_id: str, fixes: list[SpokenFix]) -> None:
        """Store cuts that other evidence of what was heard made (the engine's history)."""
        for fix in fixes:
            await self._store.update_message(
                task_id,
                fix.message.id,
                content=fix.content,
                interrupted=fix.interrupted,
                heard_at=fix.message.heard_at,
            )
            if self._transcripts is not None:
                self._transcripts.submit_update(
                    task_id, fix.message.id, fix.content, fix.interrupted
                )
        self.corrected += 1

    async def _apply(self, task_id: str, fixes: list[SpokenFix], at: float) -> str:
        changed = False
        for fix in fixes:
            await self._store.update_message(
                task_id,
                fix.message.id,
                content=fix.content,
                interrupted=fix.interrupted,
                heard_at=at,
            )
            if fix.changed:
                changed = True
                if self._transcripts is not None:
                    self._transcripts.submit_update(
                        task_id, fix.message.id, fix.content, fix.interrupted
                    )
        if not changed:
            return "unchanged"
        self.corrected += 1
        return "corrected"

    async def _settle_later(self, task_id: str) -> None:
        """The safety net: a 905 whose reply's commit missed it, and no turn follows."""
        await asyncio.sleep(self._grace)
        try:
            await self.settle(task_id)
        except Exception as exc:
            log.error("could not apply spoken text: %r", exc, extra={"task_id": task_id})

    def _recorded(self, task_id: str, message: StoredMessage) -> None:
        if self._transcripts is not None:
            self._transcripts.submit(CallContext(task_id=task_id), [message])
        self.appended += 1

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Settle what is pending now rather than wait out the grace period."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)


def reply_groups(messages: list[StoredMessage]) -> list[list[StoredMessage]]:
    """The assistant messages of each reply, oldest reply first.

    A reply is what the bot said between two user messages: its assistant messages with
    only tool results between them (a tool turn's filler, then its answer). Text a 905
    added (``spoken``) is a reply of its own; so is a run of messages from another
    source (an operator's ``context``, a ``seed``).
    """
    groups: list[list[StoredMessage]] = []
    current: list[StoredMessage] | None = None
    for message in messages:
        if message.role == "tool":
            continue  # between a step's tool calls and the next step's text
        if message.role != "assistant":
            current = None
            continue
        if message.source == "spoken":
            groups.append([message])
            current = None
            continue
        if current is not None and current[-1].source != message.source:
            current = None
        if current is None:
            current = []
            groups.append(current)
        current.append(message)
    return groups


def reply_started_before(messages: list[StoredMessage], at: float) -> list[StoredMessage] | None:
    """The reply of the newest turn whose user message came before ``at``, if written."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.role == "user" and message.source == "turn" and message.created_at < at:
            after = messages[index + 1 :]
            end = next((i for i, m in enumerate(after) if m.role == "user"), len(after))
            groups = [g for g in reply_groups(after[:end]) if g[0].source == "turn"]
            return groups[0] if groups else None
    return None


def heard_at(group: list[StoredMessage]) -> float | None:
    """When a 905 settled the reply; None while no 905 has."""
    marks = [m.heard_at for m in group if m.heard_at is not None]
    return max(marks) if marks else None


def spoken_fixes(group: list[StoredMessage], text: str) -> list[SpokenFix] | None:
    """How each message of a reply changes if the user heard ``text`` of it; None if
    ``text`` is not the beginning of the reply (spacing and punctuation aside)."""
    heard = normalise(text)
    pieces = [normalise(content_text(m.content)) for m in group]
    if not heard or not "".join(pieces).startswith(heard):
        return None
    fixes: list[SpokenFix] = []
    said = 0  # normalised characters of the messages before this one
    for message, piece in zip(group, pieces, strict=True):
        left = len(heard) - said
        if not piece or len(piece) <= left:  # heard in full (or nothing to hear)
            fixes.append(SpokenFix(message, message.content, message.interrupted))
        elif left <= 0:  # the speech stopped before this message
            fixes.append(SpokenFix(message, "", True))
        elif said == 0:  # the speech stopped here, in the reply's first words: as heard
            fixes.append(SpokenFix(message, text, True))
        else:  # here, after earlier messages: the heard start of this message's own text
            fixes.append(
                SpokenFix(message, _heard_start(content_text(message.content), left), True)
            )
        said += len(piece)
    return fixes


def _heard_start(text: str, length: int) -> str:
    """The shortest start of ``text`` with ``length`` normalised characters, and the
    punctuation right after it (the speech stopped after that, not before)."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high) // 2
        if len(normalise(text[:middle])) >= length:
            high = middle
        else:
            low = middle + 1
    while low < len(text) and not normalise(text[low]):
        low += 1
    return text[:low].rstrip()


def _fold(folded: list[dict[str, Any]] | None, item: dict[str, Any]) -> None:
    if folded is not None:
        folded.append(item)


def _spoken_message(item: dict[str, Any]) -> StoredMessage:
    at = float(item["at"])
    return StoredMessage(
        role="assistant", content=item["text"], source="spoken", created_at=at, heard_at=at
    )
