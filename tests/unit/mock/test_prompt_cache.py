"""The mock's prompt cache reports what a prefix cache would serve."""

from __future__ import annotations

from proxy.dev.mock.cache import PromptCache, common_prefix_length, render_prompt

SYSTEM = {"role": "system", "content": "You are a voice assistant."}


def test_common_prefix_length() -> None:
    assert common_prefix_length("abcdef", "abcxyz") == 3
    assert common_prefix_length("abc", "abc") == 3
    assert common_prefix_length("", "abc") == 0


def test_a_repeated_prefix_is_cached_by_its_share_of_the_prompt() -> None:
    cache = PromptCache()
    first = [SYSTEM, {"role": "user", "content": "hello"}]
    assert cache.cached_tokens(first, 100) == 0  # nothing seen yet
    second = [*first, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "again"}]
    shared = len(render_prompt(first)) - len("<|end|>") + len("<|end|>")
    expected = 100 * shared // len(render_prompt(second))
    assert cache.cached_tokens(second, 100) == expected
    # A prompt that only shares the system prompt with the recent ones.
    other = [SYSTEM, {"role": "user", "content": "different"}]
    assert cache.cached_tokens(other, 100) == 100 * common_prefix_length(
        render_prompt(other), render_prompt(second)
    ) // len(render_prompt(other))


def test_bounded() -> None:
    cache = PromptCache()
    for index in range(2000):
        cache.cached_tokens([{"role": "system", "content": f"s{index}"}], 10)
    assert len(cache._recent) == 1024
