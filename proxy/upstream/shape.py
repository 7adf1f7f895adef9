"""The request as one upstream target wants it: URL, headers and body.

Most OpenAI-compatible upstreams take ``POST {base_url}/chat/completions`` with a Bearer
key. Others differ only in shape, set per target:

- ``path``: MiniMax serves ``/v1/text/chatcompletion_v2``;
- ``auth_header``: Azure OpenAI reads the bare key from ``api-key``;
- ``query``: Azure's ``api-version``;
- ``headers``: extra headers, ``${VAR}`` read from the environment (keys stay out of YAML);
- ``drop_params``: body fields a strict upstream rejects (like LiteLLM's ``drop_params``);
- ``forward_metainfo``: the engine's ``MetaInfo`` object is the proxy's business and is
  removed, unless the target asks for it.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import urlencode

import orjson

from proxy.engines.trtc import METAINFO_FIELDS
from proxy.settings import UpstreamTarget

log = logging.getLogger(__name__)

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def target_url(target: UpstreamTarget) -> str:
    url = target.base_url + target.path
    if target.query:
        url += ("&" if "?" in url else "?") + urlencode(target.query)
    return url


def _expand(value: str) -> str:
    return _ENV_REFERENCE.sub(lambda match: os.environ.get(match.group(1), ""), value)


def target_headers(target: UpstreamTarget) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    key = target.resolved_api_key()
    if key:
        if target.auth_header.lower() == "authorization":
            headers["Authorization"] = f"Bearer {key}"
        else:
            headers[target.auth_header] = key
    for name, value in target.headers.items():
        expanded = _expand(value)
        if expanded:
            headers[name] = expanded
        else:
            log.warning("upstream header %s is empty (its environment variable is unset)", name)
    return headers


def target_body(target: UpstreamTarget, body: dict[str, Any]) -> bytes:
    """The body for this target: its model name, without the fields it must not get."""
    dropped = set(target.drop_params)
    if not target.forward_metainfo:
        dropped.update(METAINFO_FIELDS)
    if target.model and body.get("model") != target.model:
        body = {**body, "model": target.model}
    if dropped & body.keys():
        body = {key: value for key, value in body.items() if key not in dropped}
    return orjson.dumps(body)
