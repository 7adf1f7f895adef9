"""One Retell call on the LLM WebSocket, driven through the chat pipeline.

The call id is the task: each ``response_required`` / ``reminder_required`` becomes one
streamed chat turn of ``ChatService.stream`` (history, retrieval, server-side tools and
meta.info as on chat completions), carrying only the new user words; the task's
history supplies the rest.

What the agent said is what Retell's transcript says, not what the model wrote: once an
agent utterance is over (another utterance follows it, or Retell asks for the next
response), its text goes to the spoken-text reconciler that also serves the TRTC 905
callback. A reply cut short is stored as it was heard, so the model sees the shortened
utterance on the next turn.

A newer ``response_id`` ends the older stream first (its upstream connection closes
and the reply is stored as interrupted), then the transcript settles what was heard
of it, then the new turn starts: in that order, so the new turn reads a true history.
A reply the agent never began to say (the caller kept talking) is stored as unheard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from proxy.access.catalog import ResolvedProfile
from proxy.call import CallContext
from proxy.chat.chunks import chunk_events
from proxy.chat.service import ChatService
from proxy.context.history import HistoryStore
from proxy.errors import ProxyError
from proxy.retell import protocol as rp
from proxy.retell.protocol import RetellEvent, Utterance
from proxy.voice.spoken import SpokenTextReconciler

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

# Said to the model (and kept in the history) when Retell wants words but the caller
# has said nothing new: the reminder after a silence.
NUDGE = "(The caller has been silent for a while. Say something brief to re-engage them.)"
SEED_UTTERANCES = 40  # earlier utterances a connection may seed an empty history with
UNSPOKEN_REACH = 16  # the newest stored messages, enough to hold the last turn's reply
_ROLES = {"agent": "assistant", "user": "user"}


@dataclass(frozen=True, slots=True)
class RetellCall:
    call: CallContext  # task_id: the call's task key
    profile: ResolvedProfile | None
    model: str
    begin_message: str = ""


class RetellSession:
    def __init__(
        self,
        setup: RetellCall,
        chat: ChatService,
        history: HistoryStore,
        spoken: SpokenTextReconciler | None,
        send: Send,
        on_turn: Callable[[int], None] | None = None,
        before_turn: Callable[[CallContext], Awaitable[None]] | None = None,
    ) -> None:
        self.setup = setup
        self._chat = chat
        self._history = history
        self._spoken = spoken
        self._send = send
        self._on_turn = on_turn  # counts each turn by its status
        self._before_turn = before_turn  # budgets and usage, in the turn's own task
        self._nonce = uuid.uuid4().hex[:12]  # request ids are unique per connection
        self._latest_id = -1
        self._current: asyncio.Task[None] | None = None
        self._responded = False  # before the first turn, nothing said is ours
        self._spoken_upto = 0  # transcript utterances already settled
        self._last_spoken_at = 0.0
        # The turn being answered: where its user words start in the transcript, its
        # request id, and whether its reply went out whole.
        self._turn: tuple[int, str] | None = None
        self._finished = False

    @property
    def task_id(self) -> str:
        assert self.setup.call.task_id is not None
        return self.setup.call.task_id

    async def start(self) -> None:
        await self._send(rp.config_event())
        await self._send(rp.response_event(0, self.setup.begin_message, True))

    async def handle(self, event: RetellEvent) -> None:
        kind = event.interaction_type
        if kind == rp.PING_PONG:
            await self._send(rp.pong_event(event.timestamp))
        elif kind == rp.UPDATE_ONLY:
            await self._settle_spoken(event.transcript, include_last=False)
        elif kind in (rp.RESPONSE_REQUIRED, rp.REMINDER_REQUIRED):
            await self._respond(event)
        elif kind != rp.CALL_DETAILS:
            log.info("ignoring Retell interaction %r", kind, extra={"task_id": self.task_id})

    async def close(self) -> None:
        await self._stop_current()

    # A turn.

    async def _respond(self, event: RetellEvent) -> None:
        assert event.response_id is not None
        if event.response_id <= self._latest_id:
            return  # an older request arriving late: a newer one is answered
        self._latest_id = event.response_id
        received_at = time.perf_counter()
        await self._stop_current()
        if self._responded:
            await self._chat.writer.settled(self.task_id)  # the cut reply is written
            await self._settle_spoken(event.transcript, include_last=True)
            await self._forget_unspoken(event.transcript)
        body = self._body(event)
        self._responded = True
        request_id = self._request_id(event)
        self._current = asyncio.create_task(
            self._stream(event.response_id, body, request_id, received_at)
        )

    def _request_id(self, event: RetellEvent) -> str:
        """The same user turn, cut off before the agent said a word of its reply (the
        caller kept talking), keeps its request id: the pipeline then replaces that turn
        with the longer one instead of adding a second user turn."""
        start = _turn_start(event.transcript)
        if self._turn is not None and self._turn[0] == start and not self._finished:
            return self._turn[1]
        self._turn = (start, f"retell-{self._nonce}-{event.response_id}")
        return self._turn[1]

    def _body(self, event: RetellEvent) -> dict[str, Any]:
        transcript = event.transcript
        start = _turn_start(transcript)
        messages: list[dict[str, Any]] = []
        if not self._responded:  # an empty history (a new call, or one lost) starts from here
            earlier = transcript[max(0, start - SEED_UTTERANCES) : start]
            messages += [
                {"role": _ROLES[u.role], "content": u.content}
                for u in earlier
                if u.role in _ROLES and u.content.strip()
            ]
            self._spoken_upto = start  # seeded as said: not settled again
        words = " ".join(
            u.content.strip() for u in transcript[start:] if u.role == "user" and u.content.strip()
        )
        if event.interaction_type == rp.REMINDER_REQUIRED or not words:
            words = NUDGE
        messages.append({"role": "user", "content": words})
        return {"model": self.setup.model, "stream": True, "messages": messages}

    async def _stream(
        self, response_id: int, body: dict[str, Any], request_id: str, received_at: float
    ) -> None:
        call = CallContext(
            task_id=self.task_id, request_id=request_id, app_id=self.setup.call.app_id
        )
        status = 200
        self._finished = False
        try:
            if self._before_turn is not None:
                await self._before_turn(call)
            frames = await self._chat.stream(body, call, self.setup.profile, received_at)
            async for event in chunk_events(frames):
                if event.metainfo is not None:
                    await self._send(rp.metadata_event(event.metainfo))
                if event.text:
                    await self._send(rp.response_event(response_id, event.text, False))
            self._finished = True
        except ProxyError as exc:
            status = exc.status
            log.warning("Retell turn failed: %s", exc.message, extra=call.log_fields())
        except asyncio.CancelledError:
            status = 499  # a newer response_id, or the call ended
            raise
        except Exception:  # the socket went away mid-send, or a bug: end this turn only
            status = 500
            log.exception("Retell turn ended by an error", extra=call.log_fields())
        finally:
            if self._on_turn is not None:
                self._on_turn(status)
        # Ended (answered or failed): Retell may speak and move on.
        try:
            await self._send(rp.response_event(response_id, "", True))
        except Exception as exc:  # the call is gone: nobody to tell
            log.info("Retell call gone before content_complete: %r", exc)

    async def _stop_current(self) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        if not current.done():
            current.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await current

    # What was said.

    async def _forget_unspoken(self, transcript: tuple[Utterance, ...]) -> None:
        """The last reply went out whole, but the caller kept talking and the agent never
        said it (no agent utterance after the caller's words): it is kept as unheard,
        emptied and marked interrupted, as a 905 does for text nobody heard."""
        if self._turn is None or not self._finished or self._turn[0] != _turn_start(transcript):
            return
        request_id = self._turn[1]
        self._turn = None  # settled; the next turn is a new request (this one finished)
        try:
            stored = await self._history.load(self.task_id, UNSPOKEN_REACH)
            for message in stored.messages:
                if message.request_id == request_id and message.role == "assistant":
                    await self._history.update_message(
                        self.task_id, message.id, content="", interrupted=True
                    )
        except Exception as exc:  # the store is down: the turn still goes ahead
            log.error("could not mark an unspoken reply: %r", exc)

    async def _settle_spoken(
        self, transcript: tuple[Utterance, ...], *, include_last: bool
    ) -> None:
        """Agent utterances that are over, not settled yet, go to the reconciler."""
        if not self._responded or self._spoken is None:
            return
        end = len(transcript) if include_last else len(transcript) - 1
        if end < self._spoken_upto:  # a shorter transcript than before: nothing to settle
            self._spoken_upto = min(self._spoken_upto, len(transcript))
            return
        for utterance in transcript[self._spoken_upto : end]:
            if utterance.role != "agent" or not utterance.content.strip():
                continue
            # Strictly increasing: the reconciler orders replies by when they were heard.
            self._last_spoken_at = max(time.time(), self._last_spoken_at + 0.001)
            try:
                outcome = await self._spoken.on_spoken(
                    self.task_id, utterance.content, at=self._last_spoken_at
                )
                log.info("Retell agent utterance %s", outcome, extra={"task_id": self.task_id})
            except Exception as exc:  # the store is down: the turn still goes ahead
                log.error("could not record what the agent said: %r", exc)
        self._spoken_upto = end


def _turn_start(transcript: tuple[Utterance, ...]) -> int:
    """Where the caller's newest words start: after the agent's last utterance."""
    return 1 + max((i for i, u in enumerate(transcript) if u.role == "agent"), default=-1)
