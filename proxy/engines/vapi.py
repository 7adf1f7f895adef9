"""Vapi's custom LLM: an OpenAI chat request plus the call it belongs to.

Vapi posts ``{model, messages, stream, temperature, max_tokens, tools?, call, metadata,
phoneNumber, customer}`` to ``{url}/chat/completions``. With the assistant's
``metadataSendMode`` set to ``destructured`` the metadata fields come at the top level
instead of under ``metadata``; with ``off`` only the OpenAI fields come. ``call.id`` is
the task; everything else is the proxy's to read and never goes upstream.
"""

from __future__ import annotations

from typing import Any

from proxy.engines.request import OPENAI_FIELDS, EngineRequest

ENGINE_FIELDS = ("call", "metadata", "phoneNumber", "customer")


def is_vapi(body: dict[str, Any]) -> bool:
    call = body.get("call")
    return isinstance(call, dict) and isinstance(call.get("id"), str)


def adapt(body: dict[str, Any]) -> EngineRequest:
    call: dict[str, Any] = body["call"]
    metadata = _object(body.get("metadata"))
    destructured = {
        key: value
        for key, value in body.items()
        if key not in OPENAI_FIELDS and key not in ENGINE_FIELDS
    }
    customer = _object(body.get("customer"))
    variables: dict[str, Any] = {
        **destructured,
        **metadata,
        "call": call,
        "customer": customer,
        "phoneNumber": body.get("phoneNumber") or {},
    }
    kept = {
        key: value
        for key, value in body.items()
        if key not in ENGINE_FIELDS and key not in destructured
    }
    number = customer.get("number")
    return EngineRequest(
        body=kept,
        engine="vapi",
        task_id=call["id"],
        user_id=number if isinstance(number, str) else None,
        variables=variables,
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
