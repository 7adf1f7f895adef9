"""What a first turn would otherwise pay is paid at start-up."""

from __future__ import annotations


def test_the_tokenizer_is_built_before_the_first_turn(make_proxy) -> None:
    server = make_proxy()  # building it takes about 0.2 s: not on a turn, stalling streams
    assert server.state.chat.counter.loaded
