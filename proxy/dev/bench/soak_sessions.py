"""The soak's voice sessions: what each turn does, what the history must hold afterwards,
and the mock upstream that can fail a turn's first attempt only.

A turn's fault rides in the request body's ``mock`` object, which the engine stand-in
sends with every attempt of the turn. A retry carries the same body, so a plain
``first_token_ms`` larger than the engine's Timeout fails the retry too; the soak mock
adds two keys of its own for what a real upstream does now and then:

- ``soak_slow_once: <key>`` delays the first request carrying ``key`` by
  ``soak_slow_ms`` (a stalled upstream): the engine times out and retries under the
  same X-Request-Id, and the retry is answered normally;
- ``soak_tools: [...]`` answers with these tool calls unless the prompt already ends
  with a tool result (then with text), so the proxy's tool loop runs once per turn.

It also serves ``POST /tool/<name>``, the tools' local endpoint.
``python -m proxy.dev.bench.soak_sessions --port P ...`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvloop
from aiohttp import web

from proxy.context.matching import content_text, normalise
from proxy.dev.mock.behaviour import MockBehaviour
from proxy.dev.mock.upstream import MockUpstream, _serve_until_signalled
from proxy.dev.voice.room import RoundResult
from proxy.dev.voice.script import Turn

LLM_TIMEOUT, LLM_FAILED = 30200, 30202
SLOW_KEYS_KEPT = 100_000  # the mock forgets the oldest keys beyond this (bounded memory)
TOOL_DELAY_S = 0.05


class SoakMock(MockUpstream):
    """The mock upstream plus ``soak_slow_once``, ``soak_tools`` and a tool endpoint."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slowed: OrderedDict[str, None] = OrderedDict()

    def build_app(self) -> web.Application:
        app = super().build_app()
        app.router.add_post("/tool/{name}", self._tool)
        return app

    def _behaviour_for(self, scenario: dict[str, str], body: dict[str, Any]) -> MockBehaviour:
        mock = body.get("mock")
        if isinstance(mock, dict) and ("soak_slow_once" in mock or "soak_tools" in mock):
            overrides = dict(mock)
            key = overrides.pop("soak_slow_once", None)
            slow_ms = overrides.pop("soak_slow_ms", 5000)
            if isinstance(key, str) and key not in self._slowed:
                self._slowed[key] = None
                if len(self._slowed) > SLOW_KEYS_KEPT:
                    self._slowed.popitem(last=False)
                overrides["first_token_ms"] = slow_ms
            tools = overrides.pop("soak_tools", None)
            last = (body.get("messages") or [{}])[-1]
            answered = isinstance(last, dict) and last.get("role") == "tool"
            if tools and not answered:
                overrides["tool_calls"] = tools
            body = {**body, "mock": overrides}
        return super()._behaviour_for(scenario, body)

    async def _tool(self, request: web.Request) -> web.Response:
        arguments = await request.read()
        await asyncio.sleep(TOOL_DELAY_S)
        result = {"tool": request.match_info["name"], "status": "shipped", "eta": "Thursday"}
        result["arguments"] = orjson.loads(arguments or b"{}")
        return web.Response(body=orjson.dumps(result), content_type="application/json")


def mock_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.dev.bench.soak_sessions")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-token-ms", type=float, default=50.0)
    parser.add_argument("--gap-ms", type=float, default=10.0)
    parser.add_argument("--chunks", type=int, default=20)
    args = parser.parse_args(argv)
    defaults = MockBehaviour(
        first_token_ms=args.first_token_ms, gap_ms=args.gap_ms, chunks=args.chunks
    )
    server = SoakMock(args.host, args.port, defaults, record=False)
    uvloop.run(_serve_until_signalled(server))
    return 0


# What the sessions do.

# kind -> (weight, the engine error code it injects, a retry it injects: yes, no, either)
KINDS: dict[str, tuple[float, int | None, bool | None]] = {
    "normal": (55, None, False),
    "barge_in_streaming": (10, None, False),  # the user talks over a reply still arriving
    "barge_in_speaking": (10, None, False),  # ... over a reply already received, mid-speech
    "timeout_retry": (7, None, True),  # first attempt stalls, the retry answers
    "timeout_twice": (2, LLM_TIMEOUT, True),  # both attempts stall: 30200
    # The first token comes about when the engine gives up (1.9-2.1 s): heard at once,
    # or streamed after the engine left (never heard) and the retry answers.
    "timeout_at_deadline": (3, None, None),
    "upstream_503": (3, LLM_FAILED, False),  # before the first byte: 502 -> 30202
    "cut_mid_stream": (4, LLM_FAILED, False),  # after it: error event + [DONE] -> 30202
    "tool": (30, None, False),  # only in sessions on the tools profile
}
TOOL_CALLS = [{"name": "lookup_order", "arguments": {"order": "A-1042"}}]

PHRASES = [
    "Can you check my booking for tomorrow evening",
    "What time do you open on Sunday",
    "I would like to change my delivery address",
    "How much is the monthly plan with the discount",
    "Please tell me about your return policy",
    "Is the blue jacket still available in medium",
    "My order has not arrived yet what should I do",
    "Can I pay with a credit card over the phone",
]
RAG_PHRASES = [
    "What are the opening hours of the Lisbon store",
    "How long does a refund take",
    "Do you deliver to the islands",
    "Which payment methods do you accept",
]
KNOWLEDGE = """Store guide.

The Lisbon store opens at nine in the morning and closes at eight in the evening, every
day except public holidays. Refunds are paid back to the original payment method within
five working days of the return arriving at our warehouse. We deliver to the mainland in
two days and to the islands (Madeira and the Azores) in four to six days. We accept
credit cards, debit cards, MB Way and bank transfer; cash only in the stores.
"""


@dataclass(slots=True)
class SessionPlan:
    profile: str  # plain | tools | rag
    history: int  # the engine's History (rounds it re-sends)
    kinds: list[str] = field(default_factory=list)  # one per turn actually run


class Planner:
    """Seeded choices: which profile a session uses and what each turn does.

    Each caller draws from its own generator (``seed``, caller number), so a caller's
    sequence of conversations and turns is the same from run to run whatever the
    interleaving; how many of them fit in the duration depends on timing.
    """

    def __init__(
        self, seed: int, caller: int, *, tools: bool, retrieval: bool, think_ms: float
    ) -> None:
        self.rng = random.Random(f"{seed}:{caller}")
        self.caller = caller
        self.tools, self.retrieval, self.think_ms = tools, retrieval, think_ms

    def session(self) -> SessionPlan:
        roll = self.rng.random()
        profile = "plain"
        if self.tools and roll < 0.2:
            profile = "tools"
        elif self.retrieval and roll > 0.85:
            profile = "rag"
        history = 4 if self.rng.random() < 0.25 else 0
        return SessionPlan(profile, history)

    def turn(self, plan: SessionPlan, number: int) -> Turn:
        kinds = [k for k in KINDS if k != "tool" or plan.profile == "tools"]
        kind = self.rng.choices(kinds, weights=[KINDS[k][0] for k in kinds])[0]
        plan.kinds.append(kind)
        phrases = RAG_PHRASES if plan.profile == "rag" else PHRASES
        text = f"{self.rng.choice(phrases)}? (caller {self.caller}, turn {number})"
        # Every turn follows a pause, the first one of a call too (the greeting).
        wait_ms = self.think_ms * self.rng.uniform(0.5, 1.5)
        turn = Turn("say", text, wait_ms=wait_ms)
        if kind == "barge_in_streaming":  # a slower reply (~1.2 s), cut 0.3-0.9 s in
            turn.mock = {"gap_ms": 60}
            turn.interrupt_after_ms = self.rng.uniform(300, 900)
        elif kind == "barge_in_speaking":  # the reply is in; the user cuts the speech
            turn.interrupt_after_ms = self.rng.uniform(1000, 4000)
        elif kind == "timeout_retry":
            key = uuid.UUID(int=self.rng.getrandbits(128)).hex
            turn.mock = {"soak_slow_once": key, "soak_slow_ms": 10_000}
        elif kind == "timeout_at_deadline":
            key = uuid.UUID(int=self.rng.getrandbits(128)).hex
            slow_ms = self.rng.uniform(1900, 2100)
            turn.mock = {"soak_slow_once": key, "soak_slow_ms": slow_ms}
        elif kind == "timeout_twice":
            turn.mock = {"first_token_ms": 10_000}
        elif kind == "upstream_503":
            turn.mock = {"status": 503}
        elif kind == "cut_mid_stream":
            turn.mock = {"fail_after_chunks": self.rng.randint(3, 12)}
        elif kind == "tool":
            turn.mock = {"soak_tools": TOOL_CALLS}
        return turn


# What the history must hold.


@dataclass(slots=True)
class Verdict:
    """One conversation checked against the proxy's stored history."""

    turns: int = 0
    ok: int = 0
    lost: int = 0
    duplicated: int = 0
    mismatched: int = 0
    examples: list[str] = field(default_factory=list)

    def problem(self, category: str, text: str) -> None:
        setattr(self, category, getattr(self, category) + 1)
        if len(self.examples) < 3:
            self.examples.append(f"{category}: {text}")


def _same(a: str, b: str) -> bool:
    return a == b or normalise(a) == normalise(b)


def expected_reply(rnd: RoundResult) -> tuple[bool | None, str | None]:
    """(user turn stored: yes, no or None for either; the assistant text stored or None)
    for what the user heard.

    Nothing reached the caller before an HTTP error: nothing is stored. An attempt the
    engine gave up on (its timeout) keeps the user's words without a reply: a turn whose
    every attempt timed out has them. When the engine gave up on the first attempt and
    its retry then failed before the first byte, both rules apply to one round: the
    user's words may stand (the abandoned attempt was recorded before the retry failed)
    or not (the retry's failure came first); no reply, either way. Otherwise the reply
    is what was spoken (the 905 text): whole, or the prefix before a barge-in.
    """
    if rnd.first_token_ms is None:
        if rnd.error_code == LLM_TIMEOUT:
            return (True, None)
        return (None if rnd.retries else False, None)
    return (True, rnd.spoken_text)


def verify(task_id: str, rounds: list[RoundResult], messages: list[dict[str, Any]]) -> Verdict:
    verdict = Verdict()
    by_request: dict[str, list[dict[str, Any]]] = {}
    extras: list[dict[str, Any]] = []
    expected_ids = {rnd.request_id for rnd in rounds}
    for message in messages:
        request_id = message.get("request_id")
        if request_id in expected_ids:
            by_request.setdefault(request_id, []).append(message)
        else:
            extras.append(message)
    for rnd in rounds:
        verdict.turns += 1
        before = verdict.lost + verdict.duplicated + verdict.mismatched
        _verify_round(verdict, task_id, rnd, by_request.get(rnd.request_id, []))
        if verdict.lost + verdict.duplicated + verdict.mismatched == before:
            verdict.ok += 1
    # A reply said twice: an extra message repeating a stored reply (or a tool turn's
    # filler + answer, which the engine hears as one).
    replies = {
        normalise(content_text(m.get("content")))
        for m in messages
        if m["role"] == "assistant" and m not in extras
    }
    for group in by_request.values():
        spoken = (content_text(m.get("content")) for m in group if m["role"] == "assistant")
        replies.add(normalise("".join(spoken)))
    for extra in extras:
        text = content_text(extra.get("content"))
        said_twice = extra["role"] == "assistant" and normalise(text) in replies
        what = f"{task_id}: unexpected {extra.get('source')} {extra['role']} message {text!r}"
        verdict.problem("duplicated" if said_twice else "mismatched", what)
    order = [m["request_id"] for m in messages if m["role"] == "user" and m not in extras]
    wanted = [rnd.request_id for rnd in rounds if rnd.request_id in order]
    if order != wanted:
        verdict.problem("mismatched", f"{task_id}: turns stored out of order")
    problem = tool_sequence_problem(messages)
    if problem:
        verdict.problem("mismatched", f"{task_id}: {problem}")
    return verdict


def _verify_round(
    verdict: Verdict, task_id: str, rnd: RoundResult, stored: list[dict[str, Any]]
) -> None:
    where = f"{task_id} round {rnd.roundid[:8]}"
    want_user, want_reply = expected_reply(rnd)
    users = [m for m in stored if m["role"] == "user"]
    replies = [m for m in stored if m["role"] == "assistant"]
    if want_user is None and not [m for m in stored if m["role"] != "user"]:
        want_user = bool(stored)  # either, if nothing but the user's words
    if not want_user:
        if stored:
            verdict.problem("mismatched", f"{where}: stored although nothing was heard")
        return
    if not users:
        verdict.problem("lost", f"{where}: user turn {rnd.user_text!r} missing")
        return
    if len(users) > 1:
        verdict.problem("duplicated", f"{where}: user turn stored {len(users)} times")
        return
    if users[0]["content"] != rnd.user_text:
        verdict.problem("mismatched", f"{where}: user text {users[0]['content']!r}")
        return
    if want_reply is None:
        if any(content_text(m.get("content")) for m in replies):
            verdict.problem("mismatched", f"{where}: a reply stored that was never heard")
        return
    if not replies:
        verdict.problem("lost", f"{where}: reply {want_reply[:40]!r} missing")
        return
    spoken_parts = [m for m in replies if not m.get("tool_calls")]
    if len(spoken_parts) > 1:
        verdict.problem("duplicated", f"{where}: {len(spoken_parts)} final replies")
        return
    stored_text = "".join(content_text(m.get("content")) for m in replies)
    if not _same(stored_text, want_reply):
        verdict.problem(
            "mismatched", f"{where}: stored {stored_text[:60]!r}, heard {want_reply[:60]!r}"
        )
        return
    cut_short = rnd.interrupted and not _same(rnd.spoken_text, rnd.received_text)
    if cut_short and not replies[-1].get("interrupted"):
        verdict.problem("mismatched", f"{where}: a reply cut short is not marked interrupted")


def tool_sequence_problem(messages: list[dict[str, Any]]) -> str | None:
    """Why the history is not a valid OpenAI sequence around tool calls, or None."""
    open_calls: set[str] = set()
    for message in messages:
        if message["role"] == "tool":
            if message.get("tool_call_id") not in open_calls:
                return f"orphan tool message {message.get('tool_call_id')}"
            open_calls.discard(message["tool_call_id"])
            continue
        if open_calls:
            return f"unanswered tool calls {sorted(open_calls)}"
        if message["role"] == "assistant":
            open_calls = {c.get("id") for c in message.get("tool_calls") or ()}
    return f"unanswered tool calls {sorted(open_calls)}" if open_calls else None


def round_errors(kind: str, rnd: RoundResult) -> tuple[Counter[str], Counter[str]]:
    """(injected, unexpected) error counts of one round, by kind of error."""
    injected: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    _, code, retried = KINDS[kind]
    if rnd.error_code is not None:
        label = f"engine {rnd.error_code}: {_error_kind(rnd.error_message or '')}"
        (injected if rnd.error_code == code else unexpected)[label] += 1
    elif code is not None:
        unexpected[f"injected {kind} not observed"] += 1
    if rnd.retries and retried is False:
        unexpected["engine timeout + retry (not injected)"] += 1
    elif retried and not rnd.retries:
        unexpected[f"injected {kind} not observed (no retry)"] += 1
    elif rnd.retries:
        injected["engine timeout + retry"] += 1
    return injected, unexpected


def _error_kind(message: str) -> str:
    """The error message without its variable parts (ids, numbers)."""
    words = message.split()[:8]
    return " ".join("#" if len(w) > 12 and any(c.isdigit() for c in w) else w for w in words)


if __name__ == "__main__":
    raise SystemExit(mock_main())
