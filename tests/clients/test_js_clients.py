"""The Vercel AI SDK and openai-node (npm, tests/clients/js) as clients of a real proxy.

``.ci/run`` installs them (``npm ci`` in tests/clients/js); a machine without node or
without those modules fails these tests rather than skipping them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clients import scenario as s

JS = Path(__file__).parent / "js"

pytestmark = pytest.mark.slow


def run(flow: str, proxy_url: str, task_id: str) -> dict:
    node = shutil.which("node")
    assert node, "node is required (installed by .ci/run)"
    assert (JS / "node_modules" / "ai").is_dir(), "run `npm ci` in tests/clients/js (.ci/run does)"
    done = subprocess.run(
        [node, "clients.mjs", flow, proxy_url + "/v1", task_id],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


CALLS = [{"id": s.CALL_ID, "name": "get_weather", "input": s.TOOL_ARGS}]


def test_vercel_ai_sdk(client_proxy, mock, task_id):
    s.script(mock)
    s.queue_meta(client_proxy.url, task_id)
    out = run("ai", client_proxy.url, task_id)
    assert out == {
        "hello": s.HI,
        "calls": CALLS,
        "sunny": s.SUNNY,
        "attempts": 2,
        "welcome": s.WELCOME,
        "errors": [],  # meta.info never reached onError
    }
    s.check_upstream(mock)
    s.check_stored(client_proxy.url, task_id)


def test_openai_node_stream_helper(client_proxy, mock, task_id):
    s.script(mock)
    s.queue_meta(client_proxy.url, task_id)
    out = run("openai-node", client_proxy.url, task_id)
    assert out == {
        "metainfo": [s.OPERATOR_META, s.UPSTREAM_META],
        "hello": s.HI,
        "calls": CALLS,
        "sunny": s.SUNNY,
        "welcome": s.WELCOME,
    }
    s.check_upstream(mock)
    s.check_stored(client_proxy.url, task_id)
