"""Console sessions: signed, expiring, bound to the admin token; CSRF tied to the session."""

from __future__ import annotations

from proxy.console.session import LIFETIME_SECONDS, SessionSigner

TOKEN = "admin-token-0123456789"


def test_a_session_reads_back_until_it_expires():
    signer = SessionSigner(TOKEN)
    value, session = signer.issue(now=1000.0)
    assert TOKEN not in value
    assert signer.read(value, now=1000.0 + LIFETIME_SECONDS - 1) == session
    assert signer.read(value, now=1000.0 + LIFETIME_SECONDS) is None


def test_forged_tampered_or_foreign_cookies_are_refused():
    signer = SessionSigner(TOKEN)
    value, _ = signer.issue(now=1000.0)
    payload, signature = value.split(".")
    assert signer.read(payload + "." + signature[:-2] + "AA", now=1000.0) is None
    assert signer.read("eyJzaWQiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ." + signature, now=1000.0) is None
    assert SessionSigner("another-admin-token-0123").read(value, now=1000.0) is None
    for junk in ("", "no-dot", "a.b.c", "!!!.???", "x" * 600):
        assert signer.read(junk, now=1000.0) is None


def test_csrf_tokens_belong_to_their_session():
    signer = SessionSigner(TOKEN)
    _, first = signer.issue(now=1000.0)
    _, second = signer.issue(now=1000.0)
    assert first.csrf != second.csrf
    assert signer.csrf_matches(first, first.csrf)
    assert not signer.csrf_matches(first, second.csrf)
    assert not signer.csrf_matches(first, None)
    assert signer.token_matches(TOKEN, TOKEN) and not signer.token_matches(TOKEN, TOKEN + "x")
