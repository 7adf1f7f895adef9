"""Window limits trim in blocks, so consecutive prompts of a task share their prefix.

A task of 60 turns is assembled turn by turn as the proxy does (the store loads the
newest ``load_limit`` messages); a "break" is a request whose prompt does not start with
the whole previous prompt (minus nothing): an upstream prompt cache then serves only
the common part.
"""

from __future__ import annotations

import pytest

from proxy.context.assembly import RequestParts, assemble
from proxy.context.budget import TokenCounter
from proxy.context.history import StoredMessage, TaskHistory
from proxy.settings import HistoryPolicy

SYSTEM = {"role": "system", "content": "You are a concise voice assistant for a bike shop."}
COUNTER = TokenCounter()


def user_text(turn: int) -> str:
    return f"Question number {turn}: what about the gears and the brakes on model {turn}?"


def answer_text(turn: int) -> str:
    return f"Answer {turn}: the gears are fine and the brakes were serviced last week, {turn}."


def run_task(policy: HistoryPolicy, turns: int) -> list[list[dict]]:
    stored: list[StoredMessage] = []
    prompts = []
    for turn in range(turns):
        parts = RequestParts(
            system=[SYSTEM],
            earlier=[],
            prompt_tail=[],
            new_turn=[{"role": "user", "content": user_text(turn)}],
        )
        loaded = stored[-policy.load_limit :]
        history = TaskHistory(messages=list(loaded), total_messages=len(stored))
        prompt = assemble(parts, history, policy=policy, counter=COUNTER, request_id=None)
        prompts.append(prompt.messages)
        window_tokens = sum(COUNTER.count_openai_message(m) for m in prompt.messages)
        assert window_tokens <= policy.token_budget
        if policy.max_turns:
            assert sum(m["role"] == "user" for m in prompt.messages) <= policy.max_turns + 1
        stored += [*prompt.new_turn, StoredMessage(role="assistant", content=answer_text(turn))]
    return prompts


def breaks(prompts: list[list[dict]]) -> list[int]:
    return [
        i for i in range(1, len(prompts)) if prompts[i][: len(prompts[i - 1])] != prompts[i - 1]
    ]


@pytest.mark.parametrize(
    ("limit", "policy_fields"),
    [
        ("token_budget", {"token_budget": 1000, "max_turns": 0, "load_limit": 200}),
        ("max_turns", {"token_budget": 100_000, "max_turns": 10, "load_limit": 200}),
        ("load_limit", {"token_budget": 100_000, "max_turns": 0, "load_limit": 20}),
    ],
)
def test_every_window_limit_trims_in_blocks(limit: str, policy_fields: dict) -> None:
    sliding = breaks(run_task(HistoryPolicy(low_water=1.0, **policy_fields), 60))
    blocks = breaks(run_task(HistoryPolicy(low_water=0.6, **policy_fields), 60))
    # Sliding one turn at a time, every request after the window fills breaks the prefix;
    # in blocks (40% of the limit), one request per block does: the token budget holds
    # ~25 of these turns (a block is ~10), max_turns and load_limit 10 turns (a block is 4).
    first_full = sliding[0]
    assert sliding == list(range(first_full, 60)), limit
    assert blocks == EXPECTED_BREAKS[limit]


EXPECTED_BREAKS = {
    "token_budget": [22, 32, 42, 52],
    "max_turns": list(range(11, 60, 4)),
    "load_limit": list(range(11, 60, 4)),
}
