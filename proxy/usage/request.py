"""Asking the upstream for usage on a stream (``stream_options.include_usage``)."""

from __future__ import annotations

from typing import Any


def ask_for_usage(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The body to send upstream, and whether the caller asked for usage itself (then the
    usage chunk is relayed; otherwise the proxy keeps it to itself)."""
    options = body.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    if asked or not body.get("stream"):
        return body, True
    wanted = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return {**body, "stream_options": wanted}, False
