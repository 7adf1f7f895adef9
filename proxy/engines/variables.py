"""``{{variables}}`` in a profile's system prompt, filled from what the engine sent.

``{{name}}`` or ``{{ customer.number }}`` (a dotted path into objects). A placeholder
with no value is left as written, so a missing variable is visible, not silently empty.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.access.catalog import ResolvedProfile

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w-]*(?:\.[\w-]+)*)\s*\}\}")
MAX_VALUE_CHARS = 2000  # a variable is a name or a number, not a document


def _lookup(variables: Mapping[str, Any], path: str) -> Any:
    value: Any = variables
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text[:MAX_VALUE_CHARS]


def render(template: str, variables: Mapping[str, Any]) -> str:
    def fill(match: re.Match[str]) -> str:
        value = _lookup(variables, match.group(1))
        return match.group(0) if value is None else _text(value)

    return _PLACEHOLDER.sub(fill, template)


def with_variables(
    profile: ResolvedProfile | None, variables: Mapping[str, Any]
) -> ResolvedProfile | None:
    """The profile with its system prompt filled in (the same profile when nothing to do)."""
    if profile is None or not variables:
        return profile
    prompt = profile.spec.system_prompt
    if not prompt or "{{" not in prompt:
        return profile
    spec = profile.spec.model_copy(update={"system_prompt": render(prompt, variables)})
    return dataclasses.replace(profile, spec=spec)
