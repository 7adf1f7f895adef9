"""``proxy bench --profile prefix``: how much of each prompt an upstream cache can reuse.

A task whose history has reached its budget is continued for 40 turns, assembled
exactly as the proxy does (``proxy.context.assembly.assemble`` over a store that loads
the newest ``load_limit`` messages, retrieval placed by ``proxy.chat.grounding.ground``),
and compared with the first release: a window sliding one turn per request and
retrieval appended to the leading system message. Reuse of a turn is the longest common
token prefix with the previous request of the task, over the request's tokens (what an
upstream prompt cache serves). The modelled upstream time to first token charges
uncached prompt tokens at prefill speed and cached ones at a tenth of it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.chat.grounding import ground
from proxy.context.assembly import assemble, split_request
from proxy.context.budget import TokenCounter
from proxy.context.history import StoredMessage, TaskHistory
from proxy.context.matching import content_text
from proxy.settings import HistoryPolicy

SYSTEM_PROMPT = (
    "You are Ava, the voice assistant of Northwind Bikes. Answer in one or two short "
    "spoken sentences, no lists, no markdown. Be warm and precise; if you do not know, "
    "say so and offer to connect the caller with the shop."
)
_VOCABULARY = (
    "frame brake chain gear saddle wheel tyre pedal helmet light battery motor warranty "
    "repair service booking delivery price size colour carbon steel aluminium commute "
    "trail road gravel kids cargo folding electric range charge lock insurance rental"
)
WORDS = tuple(_VOCABULARY.split(" "))
PREFILL_TURNS = 60  # the history has reached its budget before the measured turns
CHUNKS = 24  # topic chunks of about 100 tokens (and one more per turn)
TOPIC_TURNS = 3  # a caller asks about one topic for a few turns


@dataclass(frozen=True, slots=True)
class TtftModel:
    base_ms: float = 150.0
    uncached_ms_per_token: float = 0.2  # ~5,000 prompt tokens/s of prefill
    cached_ms_per_token: float = 0.02

    def ttft_ms(self, prompt_tokens: int, cached_tokens: int) -> float:
        uncached = prompt_tokens - cached_tokens
        return (
            self.base_ms
            + uncached * self.uncached_ms_per_token
            + cached_tokens * self.cached_ms_per_token
        )


def _words(seed: int, count: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * (seed % 5 + 3)) % len(WORDS)] for i in range(count))


def user_text(turn: int) -> str:
    return f"Turn {turn}: tell me about the {_words(turn, 14)}?"


def answer_text(turn: int) -> str:
    return f"Sure. For turn {turn}, the {_words(turn + 101, 34)}."


def knowledge_for(turn: int) -> str:
    """The top 3 chunks for a turn: two about the turn's topic (shared by the turns of
    one topic), one that only this turn retrieves."""
    topic = turn // TOPIC_TURNS
    chunks = [(topic * 2) % CHUNKS, (topic * 2 + 1) % CHUNKS, CHUNKS + turn]
    lines = [
        f"[{rank}] Guide {chunk}: {_words(chunk + 500, 70)}."
        for rank, chunk in enumerate(chunks, start=1)
    ]
    return "Relevant knowledge:\n" + "\n".join(lines)


def new_place(
    messages: list[dict[str, Any]], context: str, new_turn: list[StoredMessage]
) -> list[dict[str, Any]]:
    """Now: new chunks only, just before the new turn, stored with the turn."""
    return ground(messages, context, new_turn, None)


def old_inject(
    messages: list[dict[str, Any]], context: str, new_turn: list[StoredMessage]
) -> list[dict[str, Any]]:
    """The first release: retrieval appended to the leading system message."""
    first = messages[0]
    text = content_text(first.get("content"))
    return [{**first, "content": f"{text}\n\n{context}"}, *messages[1:]]


def render(messages: list[dict[str, Any]]) -> str:
    return "".join(f"<|{m['role']}|>{content_text(m.get('content'))}<|end|>" for m in messages)


def common_prefix(a: list[int], b: list[int]) -> int:
    length = min(len(a), len(b))
    for index in range(length):
        if a[index] != b[index]:
            return index
    return length


@dataclass(slots=True)
class Series:
    name: str
    reuse: list[float]
    prompt_tokens: list[int]
    ttft_ms: list[float]


def run_task(
    policy: HistoryPolicy,
    counter: TokenCounter,
    turns: int,
    place: Callable[[list[dict[str, Any]], str, list[StoredMessage]], list[dict[str, Any]]] | None,
    model: TtftModel,
    name: str,
) -> Series:
    stored: list[StoredMessage] = []
    previous: list[int] | None = None
    series = Series(name, [], [], [])
    for turn in range(PREFILL_TURNS + turns):
        request = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_text(turn)},
        ]
        loaded = stored[-policy.load_limit :]
        history = TaskHistory(messages=list(loaded), total_messages=len(stored))
        prompt = assemble(
            split_request(request), history, policy=policy, counter=counter, request_id=None
        )
        messages = prompt.messages
        if place is not None:
            messages = place(messages, knowledge_for(turn), prompt.new_turn)
        tokens = counter.encoding.encode_ordinary(render(messages))
        if turn >= PREFILL_TURNS and previous is not None:
            cached = common_prefix(previous, tokens)
            series.reuse.append(cached / len(tokens))
            series.prompt_tokens.append(len(tokens))
            series.ttft_ms.append(model.ttft_ms(len(tokens), cached))
        previous = tokens
        stored += [*prompt.new_turn, StoredMessage(role="assistant", content=answer_text(turn))]
    return series


def measure(
    turns: int = 40, policy: HistoryPolicy | None = None, model: TtftModel | None = None
) -> list[tuple[str, Series, Series]]:
    """(case, first release, now) for retrieval off and on."""
    policy = policy or HistoryPolicy()
    model = model or TtftModel()
    counter = TokenCounter()
    sliding = policy.model_copy(update={"low_water": 1.0})
    cases = []
    for case, before, now in (
        ("retrieval off", None, None),
        ("retrieval on", old_inject, new_place),
    ):
        old = run_task(sliding, counter, turns, before, model, "first release")
        new = run_task(policy, counter, turns, now, model, "now")
        cases.append((case, old, new))
    return cases


def render_report(cases: list[tuple[str, Series, Series]], policy: HistoryPolicy) -> str:
    lines = [
        f"Prefix reuse: {len(cases[0][1].reuse)} turns after the budget is reached "
        f"(token_budget {policy.token_budget}, max_turns {policy.max_turns}, load_limit "
        f"{policy.load_limit}, low_water {policy.low_water}); reuse = common token prefix "
        "with the previous request / request tokens",
        f"{'case':<14} {'assembly':<14} {'reuse p50':>9} {'reuse p10':>9} {'min':>6} "
        f"{'tokens p50':>10} {'model TTFT p50':>14} {'p90':>7}",
    ]
    for case, *both in cases:
        for series in both:
            reuse = sorted(series.reuse)
            ttft = sorted(series.ttft_ms)
            lines.append(
                f"{case:<14} {series.name:<14} {statistics.median(reuse):>9.3f} "
                f"{reuse[len(reuse) // 10]:>9.3f} {reuse[0]:>6.3f} "
                f"{statistics.median(series.prompt_tokens):>10.0f} "
                f"{statistics.median(ttft):>11.0f} ms {ttft[len(ttft) * 9 // 10]:>4.0f} ms"
            )
    for case, *both in cases:
        for series in both:
            per_turn = " ".join(f"{value:.2f}" for value in series.reuse)
            lines.append(f"  per turn, {case}, {series.name}: {per_turn}")
    return "\n".join(lines)


def report(turns: int = 40) -> str:
    policy = HistoryPolicy()
    return render_report(measure(turns, policy), policy)
