"""Choosing and applying an agent profile to a request.

The caller's key names a profile; a request may ask for another one with a ``profile``
field (top level, or inside the engine's ``MetaInfo`` object) when its key allows it.
The field is the proxy's business and is removed before the body goes upstream.
"""

from __future__ import annotations

from typing import Any

from proxy.access.catalog import Caller, Catalog, ResolvedProfile
from proxy.errors import InvalidRequest, PermissionDenied

METAINFO_FIELDS = ("MetaInfo", "metainfo", "meta_info")


def _take_requested(body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    requested = None
    if "profile" in body:
        body = dict(body)
        requested = body.pop("profile")
    else:
        for field in METAINFO_FIELDS:
            meta = body.get(field)
            if isinstance(meta, dict) and "profile" in meta:
                body = {**body, field: {k: v for k, v in meta.items() if k != "profile"}}
                requested = meta["profile"]
                break
    if requested is not None and not isinstance(requested, str):
        raise InvalidRequest("'profile' must be a string", param="profile")
    return body, requested


def select_profile(
    body: dict[str, Any], caller: Caller, catalog: Catalog
) -> tuple[dict[str, Any], ResolvedProfile | None]:
    body, requested = _take_requested(body)
    name = caller.profile
    if requested and requested != caller.profile:
        if not caller.allow_profile_override:
            raise PermissionDenied(
                "this API key may not choose a profile", code="profile_not_allowed", param="profile"
            )
        name = requested
    if name is None:
        return body, None
    profile = catalog.profile(name)
    if profile is None:
        if requested:
            raise InvalidRequest(
                f"unknown profile {name!r}", param="profile", code="unknown_profile"
            )
        return body, None  # a key bound to a deleted profile still works, unshaped
    return body, profile


def apply_profile(body: dict[str, Any], profile: ResolvedProfile) -> dict[str, Any]:
    """The profile's model and system prompt (prefix or override) applied to the body."""
    spec = profile.spec
    body = dict(body)
    if spec.model:
        body["model"] = spec.model
    if spec.system_prompt:
        messages = list(body["messages"])
        leading = 0
        while leading < len(messages) and messages[leading].get("role") in ("system", "developer"):
            leading += 1
        if spec.system_prompt_mode == "override" or leading == 0:
            messages = [{"role": "system", "content": spec.system_prompt}, *messages[leading:]]
        else:
            first = messages[0]
            text = first.get("content") if isinstance(first.get("content"), str) else ""
            messages[0] = {**first, "content": f"{spec.system_prompt}\n\n{text}".strip()}
        body["messages"] = messages
    return body
