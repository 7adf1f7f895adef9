"""A chat request as an engine adapter leaves it: the body for the pipeline, and what
the engine said about the call (its task, its user, its prompt variables)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from proxy.call import CallContext, task_key, valid_task_id
from proxy.errors import InvalidRequest

# The chat-completions request fields (OpenAI's, and the proxy's own); anything else an
# engine adds is the engine's.
OPENAI_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "response_format",
        "seed",
        "service_tier",
        "store",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "verbosity",
        "web_search_options",
        "prompt_cache_key",
        "safety_identifier",
        "profile",  # the proxy's: an agent profile (proxy.chat.profiles)
        "MetaInfo",  # TRTC's, removed at the upstream target
        "metainfo",
        "meta_info",
    }
)


@dataclass(slots=True)
class EngineRequest:
    body: dict[str, Any]
    engine: str | None = None
    task_id: str | None = None  # the engine's own name for the task (before tenant scoping)
    user_id: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)  # for the profile's prompt

    def applied_to(self, call: CallContext, meta_info_events: str | None = None) -> CallContext:
        """The call with what the engine said; ``call`` is already scoped to its tenant.
        ``meta_info_events`` is the caller key's override of PROXY_META_INFO_EVENTS."""
        if meta_info_events is not None:
            call = replace(call, meta_info_events=meta_info_events)
        if self.engine is None:
            return call
        changes: dict[str, Any] = {"engine": self.engine}
        if self.task_id is not None:
            if not valid_task_id(self.task_id):
                raise InvalidRequest(
                    f"the {self.engine} call id must be 1-256 printable characters",
                    code="invalid_task_id",
                )
            changes["task_id"] = task_key(call.app_id, self.task_id)
        if self.user_id is not None and call.user_id is None and valid_task_id(self.user_id):
            changes["user_id"] = self.user_id
        return replace(call, **changes)
