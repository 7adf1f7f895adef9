"""Which 908 says the engine spoke nothing of the round's reply."""

from __future__ import annotations

import pytest

from proxy.voice.callbacks import engine_gave_up


@pytest.mark.parametrize(
    ("payload", "gave_up"),
    [
        ({"Metric": "llm_error", "Tag": {"RoundId": "r", "Code": 30200, "Message": "t"}}, True),
        ({"Metric": "llm_error", "Tag": {"Code": "30200"}}, True),
        ({"Metric": "llm_error", "Tag": {"Code": 30202}}, False),  # a failure mid-stream
        ({"Metric": "tts_error", "Tag": {"Code": 30200}}, False),
        ({"Metric": "llm_error", "Tag": "30200"}, False),
        ({"Metric": "llm_error"}, False),
    ],
)
def test_only_an_llm_timeout_means_nothing_was_heard(payload, gave_up) -> None:
    assert engine_gave_up(payload) is gave_up
