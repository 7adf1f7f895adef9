"""The profile's server-side tools for one request, next to the caller's own tools.

The proxy offers the model both: its own tools (run here, never seen by the caller)
and the tools the caller sent (passed through: their calls go back to the caller, as
with any OpenAI endpoint). A caller tool named like a server-side tool is refused
(400), since the proxy could not tell whose call the model makes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from proxy.chat.joins import speakable
from proxy.errors import InvalidRequest
from proxy.tools.registry import ToolRegistry, ToolSpec
from proxy.tools.runner import ToolRunner

DEFAULT_FILLER = "One moment, let me check."


@dataclass(slots=True)
class ToolBelt:
    """The server-side tools of one request."""

    specs: dict[str, ToolSpec]
    runner: ToolRunner
    fillers: list[str] = field(default_factory=list)  # the profile's phrases
    max_steps: int = 4
    caller_tools: frozenset[str] = frozenset()  # names of the caller's (pass-through) tools

    def filler_for(self, tool_name: str | None) -> str:
        spec = self.specs.get(tool_name or "")
        if spec is not None and spec.filler:
            return speakable(str(spec.filler))
        return speakable(random.choice(self.fillers) if self.fillers else DEFAULT_FILLER)

    def runs(self, tool_name: str | None) -> bool:
        """True for a server-side tool; a caller's tool call goes back to the caller."""
        return (tool_name or "") in self.specs


def caller_tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def tool_belt(
    body: dict[str, Any],
    profile_tools: list[str],
    fillers: list[str],
    registry: ToolRegistry | None,
    runner: ToolRunner | None,
    max_steps: int,
) -> ToolBelt | None:
    """The belt for a request, or None when the profile has no server-side tools.

    Raises ``InvalidRequest`` (400, ``tool_name_conflict``) when a caller tool has the
    name of one of the profile's tools.
    """
    if not profile_tools or registry is None or runner is None:
        return None
    specs = {spec.name: spec for spec in registry.for_profile(profile_tools)}
    if not specs:
        return None
    caller = caller_tool_names(body)
    clashes = sorted(set(caller) & set(specs))
    if clashes:
        raise InvalidRequest(
            f"tool name(s) {', '.join(repr(n) for n in clashes)} are server-side tools of this "
            "agent; rename the caller's tool",
            param="tools",
            code="tool_name_conflict",
        )
    return ToolBelt(specs, runner, list(fillers), max_steps, frozenset(caller))


def with_belt(body: dict[str, Any], belt: ToolBelt) -> dict[str, Any]:
    """The body offered upstream: the caller's tools, then the proxy's."""
    tools = [*(body.get("tools") or ()), *(s.openai_schema() for s in belt.specs.values())]
    return {**body, "tools": tools}
