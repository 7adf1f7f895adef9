"""Tencent RTC Conversational AI: ``LLMConfig.MetaInfo`` travels in the request body.

The engine is recognised by its headers (``proxy.call``); its ``MetaInfo`` object
is the proxy's to read (a profile choice, prompt variables) and leaves the body at the
upstream target, unless the target sets ``forward_metainfo``.
"""

from __future__ import annotations

from typing import Any

METAINFO_FIELDS = ("MetaInfo", "metainfo", "meta_info")


def metainfo_of(body: dict[str, Any]) -> dict[str, Any]:
    """The request's MetaInfo object (empty when absent or not an object)."""
    for field in METAINFO_FIELDS:
        value = body.get(field)
        if isinstance(value, dict):
            return value
    return {}
