"""Engine history as evidence of what was heard: which stored reply a re-sent assistant
message cuts, and to what."""

from __future__ import annotations

from proxy.context.heard import apply_in_place, heard_cuts
from proxy.context.history import StoredMessage

REPLY = "Sure, your card ends in 4242. Shall I block it now?"


def stored(*pairs: tuple[str, str]) -> list[StoredMessage]:
    return [StoredMessage(role=role, content=text) for role, text in pairs]


def request(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": text} for role, text in pairs]


def test_a_shorter_engine_copy_cuts_the_stored_reply_to_it() -> None:
    history = stored(("user", "Is my card blocked?"), ("assistant", REPLY))
    fixes = heard_cuts(
        request(("user", "Is my card blocked?"), ("assistant", "Sure, your card ends in 4242.")),
        history,
    )
    assert [(f.message.id, f.content, f.interrupted) for f in fixes] == [
        (history[1].id, "Sure, your card ends in 4242.", True)
    ]
    apply_in_place(fixes)
    assert (history[1].content, history[1].interrupted) == ("Sure, your card ends in 4242.", True)


def test_the_same_text_a_longer_text_or_another_text_cuts_nothing() -> None:
    history = stored(("user", "Is my card blocked?"), ("assistant", REPLY))
    for sent in (REPLY, REPLY.upper().replace(",", ""), REPLY + " Anything else?", "No."):
        assert (
            heard_cuts(request(("user", "Is my card blocked?"), ("assistant", sent)), history) == []
        )


def test_the_reply_after_the_matching_user_message_is_the_one_cut() -> None:
    # Both replies begin alike; the request's second round speaks of the second one.
    history = stored(
        ("user", "first question"),
        ("assistant", "Sure, here is the first answer."),
        ("user", "second question"),
        ("assistant", "Sure, here is the second answer."),
    )
    fixes = heard_cuts(
        request(
            ("user", "first question"),
            ("assistant", "Sure, here is the first answer."),
            ("user", "second question"),
            ("assistant", "Sure, here"),
        ),
        history,
    )
    assert [(f.message.id, f.content) for f in fixes] == [(history[3].id, "Sure, here")]


def test_an_assistant_message_without_a_user_message_before_it_is_not_evidence() -> None:
    history = stored(("user", "q"), ("assistant", REPLY))
    assert heard_cuts(request(("assistant", "Sure,")), history) == []
