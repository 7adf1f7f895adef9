"""Recognising the engine behind a chat request, and adapting the request to the pipeline."""

from __future__ import annotations

from typing import Any

from proxy.engines import elevenlabs, vapi
from proxy.engines.request import EngineRequest
from proxy.engines.trtc import metainfo_of


def adapt_request(body: dict[str, Any]) -> EngineRequest:
    """The body without the engine's own fields, and what they said."""
    if vapi.is_vapi(body):
        return vapi.adapt(body)
    if elevenlabs.is_elevenlabs(body):
        return elevenlabs.adapt(body)
    return EngineRequest(body=body, variables=metainfo_of(body))  # TRTC's MetaInfo, if any
