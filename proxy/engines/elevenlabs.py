"""ElevenLabs Agents' custom LLM: an OpenAI chat request plus the session's extra body.

With "Custom LLM extra body" on, the request carries ``elevenlabs_extra_body`` (what the
client passed as ``custom_llm_extra_body`` when it started the conversation), and
``user_id`` when the session has one. Neither goes upstream. The extra body fills prompt
variables; its ``conversation_id`` (or ``task_id``) names the task when the client puts
one there, otherwise ``X-Task-Id`` does.
"""

from __future__ import annotations

from typing import Any

from proxy.engines.request import EngineRequest

EXTRA_BODY_FIELDS = ("elevenlabs_extra_body", "custom_llm_extra_body")
ENGINE_FIELDS = (*EXTRA_BODY_FIELDS, "user_id")


def is_elevenlabs(body: dict[str, Any]) -> bool:
    return any(field in body for field in EXTRA_BODY_FIELDS)


def adapt(body: dict[str, Any]) -> EngineRequest:
    extra: dict[str, Any] = {}
    for field in EXTRA_BODY_FIELDS:
        if isinstance(body.get(field), dict):
            extra.update(body[field])
    user_id = body.get("user_id")
    task_id = extra.get("conversation_id") or extra.get("task_id")
    variables = {**extra, **({"user_id": user_id} if user_id is not None else {})}
    return EngineRequest(
        body={key: value for key, value in body.items() if key not in ENGINE_FIELDS},
        engine="elevenlabs",
        task_id=str(task_id) if isinstance(task_id, str | int) and task_id != "" else None,
        user_id=str(user_id) if isinstance(user_id, str | int) else None,
        variables=variables,
    )
