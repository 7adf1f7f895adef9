"""A task's timeline: one row per round, joined from what the proxy and the engine recorded.

Sources: the durable transcript (user turns and replies, corrected by 905s), the turn
records (what the proxy sent, its timing, retries and replays, tools, meta.info), and
the engine's callbacks (903 sentences, 905 heard text, 906 metrics, 908 errors).

The LLM request carries no round id, so a round's engine id is found by text, as the
proxy matches a 905 to a reply: a 905 belongs to the round whose sent reply begins with
it (ignoring spacing and punctuation); a 903 to the round whose user text it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from proxy.context.matching import content_text, normalise
from proxy.db.models import CallbackEvent, RoundMetric, TranscriptMessage, TurnRecord
from proxy.voice import events as ev
from proxy.voice.events import normalise_payload

ENGINE_STAGES = ("asr_latency", "llm_first_token", "tts_first_frame_latency")


@dataclass(slots=True)
class Round:
    number: int
    started_at: datetime | None
    request_id: str | None = None
    user_text: str = ""
    asr_text: str | None = None  # the engine's 903 sentence, when it differs
    sent: str | None = None  # what the proxy sent (the reply as generated, up to a cut)
    heard: str | None = None  # what the user heard (905, or the corrected transcript)
    interrupted: bool = False
    round_id: str | None = None
    attempts: list[TurnRecord] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # 906
    errors: list[dict[str, Any]] = field(default_factory=list)  # 908
    tool_steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def answered(self) -> TurnRecord | None:
        """The attempt whose reply the user got (the last one that was not a replay)."""
        served = [a for a in self.attempts if a.outcome != "replayed"]
        return served[-1] if served else (self.attempts[-1] if self.attempts else None)

    @property
    def retries(self) -> int:
        return max(0, len([a for a in self.attempts if a.outcome != "replayed"]) - 1)

    @property
    def replays(self) -> int:
        return len([a for a in self.attempts if a.outcome == "replayed"])

    @property
    def tools(self) -> list[dict[str, Any]]:
        return [tool for a in self.attempts for tool in (a.tools or [])]

    @property
    def meta(self) -> list[dict[str, Any]]:
        answered = self.answered
        return list(answered.meta or []) if answered is not None else []

    @property
    def sources(self) -> list[dict[str, Any]]:
        return [s for m in self.meta for s in (m.get("sources") or []) if isinstance(s, dict)]

    def cut(self) -> tuple[str, str] | None:
        """(heard part, unheard rest) of the sent reply, when the user heard less of it."""
        if not self.sent or self.heard is None:
            return None
        return split_heard(self.sent, self.heard)


def split_heard(sent: str, heard: str) -> tuple[str, str] | None:
    target = normalise(heard)
    if not normalise(sent).startswith(target) or normalise(sent) == target:
        return None
    kept, index = 0, 0
    while kept < len(target) and index < len(sent):
        kept += len(normalise(sent[index]))
        index += 1
    # Punctuation right after the last heard word was heard with it ("time," not "time").
    while index < len(sent) and not normalise(sent[index]) and not sent[index].isspace():
        index += 1
    return (sent[:index], sent[index:]) if index < len(sent) else None


def _event_payload(event: CallbackEvent) -> dict[str, Any]:
    info = event.payload.get("EventInfo") if isinstance(event.payload, dict) else None
    payload = info.get("Payload") if isinstance(info, dict) else None
    return normalise_payload(payload) if isinstance(payload, dict) else {}


def build_rounds(
    transcript: Sequence[TranscriptMessage],
    turns: Sequence[TurnRecord],
    events: Sequence[CallbackEvent],
    metrics: Sequence[RoundMetric],
) -> list[Round]:
    rounds: list[Round] = []
    current: Round | None = None
    for message in transcript:
        text = content_text(message.content)
        if message.role == "user" and message.source != "context":
            current = Round(len(rounds) + 1, message.created_at, message.request_id, text)
            rounds.append(current)
        elif message.role == "assistant":
            if current is None or message.source == "spoken":  # said without a turn (welcome)
                current = Round(len(rounds) + 1, message.created_at, user_text="")
                rounds.append(current)
            if text:
                current.heard = (current.heard or "") + text
            if message.tool_calls:
                names = [c.get("function", {}).get("name") for c in message.tool_calls]
                current.tool_steps.append({"calls": [n for n in names if n]})
            current.interrupted = current.interrupted or message.interrupted
    _attach_turns(rounds, turns)
    _attach_engine(rounds, events, metrics)
    return rounds


def _attach_turns(rounds: list[Round], turns: Sequence[TurnRecord]) -> None:
    by_request: dict[str, list[TurnRecord]] = {}
    for turn in turns:
        by_request.setdefault(turn.request_id, []).append(turn)
    known = {r.request_id for r in rounds if r.request_id}
    for round_ in rounds:
        round_.attempts = by_request.get(round_.request_id or "", [])
        answered = round_.answered
        if answered is not None and answered.sent_text is not None:
            round_.sent = answered.sent_text
            round_.interrupted = round_.interrupted or answered.outcome == "interrupted"
    for request_id, attempts in by_request.items():  # failed before anything was stored
        if request_id not in known:
            rounds.append(
                Round(len(rounds) + 1, attempts[0].created_at, request_id, attempts=attempts)
            )


def _attach_engine(
    rounds: list[Round], events: Sequence[CallbackEvent], metrics: Sequence[RoundMetric]
) -> None:
    by_round: dict[str, Round] = {}
    for event in sorted(events, key=lambda e: e.event_ms_ts):
        match: Round | None = None
        payload = _event_payload(event)
        text = payload.get("Text")
        if not isinstance(text, str) or not normalise(text):
            continue
        if event.event_type == ev.SPEAKING_FINISHED:
            match = _first(
                rounds,
                lambda r, t=text: (
                    r.round_id is None
                    and normalise(r.sent or r.heard or "").startswith(normalise(t))
                ),
            )
            if match is not None:
                match.heard, match.round_id = text, event.round_id
                if split_heard(match.sent or "", text) is not None:
                    match.interrupted = True
        elif event.event_type == ev.SENTENCE:
            match = _first(rounds, lambda r, t=text: normalise(r.user_text) == normalise(t))
            if match is not None:
                match.asr_text = text if text.strip() != match.user_text.strip() else None
                match.round_id = match.round_id or event.round_id
        if event.round_id and match is not None:
            by_round.setdefault(event.round_id, match)
    for metric in metrics:
        round_ = by_round.get(metric.round_id or "")
        if round_ is None:
            continue
        if metric.metric.endswith("_error"):
            tags = metric.tags or {}
            round_.errors.append(
                {"metric": metric.metric, "code": tags.get("Code"), "message": tags.get("Message")}
            )
        elif metric.value is not None:
            round_.metrics[metric.metric] = metric.value


def _first(rounds: list[Round], wanted: Any) -> Round | None:
    return next((r for r in rounds if wanted(r)), None)
