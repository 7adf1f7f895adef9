"""The soak's verdict: each round against the stored history, counted exactly.

What the history must hold is what the user heard (``expected_reply``): the whole reply,
the spoken prefix after a barge-in, and the user's words alone when the engine gave up
(30200): the proxy records such a reply as an empty ``interrupted`` message, or not at all.
"""

from __future__ import annotations

from typing import Any

from proxy.dev.bench.soak_sessions import LLM_FAILED, LLM_TIMEOUT, round_errors, verify
from proxy.dev.voice.room import RoundResult

REPLY = "Reply to: hello there, this is the whole reply"


def _round(n: int, **fields: Any) -> RoundResult:
    rnd = RoundResult(f"round-{n}", "say", f"user words {n}", request_id=f"req-{n}")
    rnd.first_token_ms, rnd.received_text, rnd.spoken_text = 50.0, REPLY, REPLY
    for name, value in fields.items():
        setattr(rnd, name, value)
    return rnd


def _user(n: int) -> dict[str, Any]:
    return {"role": "user", "content": f"user words {n}", "request_id": f"req-{n}"}


def _reply(n: int, text: str = REPLY, **fields: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text, "request_id": f"req-{n}", **fields}


def _counts(rounds: list[RoundResult], stored: list[dict[str, Any]]) -> tuple[int, ...]:
    v = verify("task", rounds, stored)
    return v.turns, v.ok, v.lost, v.duplicated, v.mismatched


def test_a_faithful_history_passes_every_round() -> None:
    cut = _round(1, interrupted=True, spoken_text="Reply to: hel")
    rounds = [_round(0), cut]
    stored = [_user(0), _reply(0), _user(1), _reply(1, "Reply to: hel", interrupted=True)]
    assert _counts(rounds, stored) == (2, 2, 0, 0, 0)


def test_a_missing_reply_is_lost_and_a_second_copy_duplicated() -> None:
    rounds = [_round(0), _round(1)]
    stored = [_user(0), _user(1), _reply(1), _reply(1)]
    assert _counts(rounds, stored) == (2, 0, 1, 1, 0)


def test_a_reply_cut_short_but_stored_whole_is_mismatched() -> None:
    cut = _round(0, interrupted=True, spoken_text="Reply to: hel")
    assert _counts([cut], [_user(0), _reply(0)]) == (1, 0, 0, 0, 1)
    unmarked = [_user(0), _reply(0, "Reply to: hel")]  # cut, but not marked interrupted
    assert _counts([cut], unmarked) == (1, 0, 0, 0, 1)


def test_the_engine_gave_up_the_user_heard_nothing() -> None:
    """30200: the proxy may have streamed part of a reply after the engine's timeout;
    the user heard none of it. Its words stay, a reply with text does not."""
    gave_up = _round(0, first_token_ms=None, received_text="", spoken_text="")
    gave_up.error_code, gave_up.retries = LLM_TIMEOUT, 1
    assert _counts([gave_up], [_user(0)]) == (1, 1, 0, 0, 0)
    emptied = [_user(0), _reply(0, "", interrupted=True)]
    assert _counts([gave_up], emptied) == (1, 1, 0, 0, 0)
    streamed_after = [_user(0), _reply(0, "Reply to", interrupted=True)]
    assert _counts([gave_up], streamed_after) == (1, 0, 0, 0, 1)
    assert _counts([gave_up], []) == (1, 0, 1, 0, 0)  # the user's words are kept


def test_an_error_before_the_first_byte_stores_nothing() -> None:
    failed = _round(0, first_token_ms=None, received_text="", spoken_text="")
    failed.error_code = LLM_FAILED
    assert _counts([failed], []) == (1, 1, 0, 0, 0)
    assert _counts([failed], [_user(0)]) == (1, 0, 0, 0, 1)


def test_a_905_stored_apart_from_its_turn_is_not_its_reply() -> None:
    """The heard text appended as an unmatched 905 (no request id) while the round's own
    reply is missing: the reply is lost and the extra message mismatched."""
    rounds = [_round(0)]
    stored = [_user(0), {"role": "assistant", "content": REPLY, "source": "spoken"}]
    assert _counts(rounds, stored) == (1, 0, 1, 0, 1)


def test_a_retry_that_fails_before_its_first_byte_after_an_abandoned_attempt() -> None:
    """The engine gave up on the first attempt (recorded: the user spoke), and the retry
    got a 502: the user's words may stand or not, a reply may not."""
    failed = _round(0, first_token_ms=None, received_text="", spoken_text="", retries=1)
    failed.error_code = LLM_FAILED
    assert _counts([failed], []) == (1, 1, 0, 0, 0)
    assert _counts([failed], [_user(0)]) == (1, 1, 0, 0, 0)
    assert _counts([failed], [_user(0), _reply(0, "Reply")]) == (1, 0, 0, 0, 1)


def test_a_first_token_at_the_engines_deadline_may_or_may_not_be_retried() -> None:
    heard = _round(0)
    retried = _round(1, retries=1)
    for rnd, injected in ((heard, {}), (retried, {"engine timeout + retry": 1})):
        assert round_errors("timeout_at_deadline", rnd) == (injected, {})
    assert round_errors("normal", retried)[1] == {"engine timeout + retry (not injected)": 1}
    assert round_errors("timeout_retry", heard)[1] == {
        "injected timeout_retry not observed (no retry)": 1
    }
