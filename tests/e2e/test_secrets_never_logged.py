"""Secrets never reach the logs: a real proxy process at debug level, driven through
successes and every kind of failure, must not print any secret it was given or sent."""

from __future__ import annotations

import httpx
import orjson
from sqlalchemy.engine import make_url

from proxy.db.migrate import upgrade
from proxy.dev.voice import room
from proxy.voice.signing import sign
from tests.conftest import REDIS_URL
from tests.e2e.procs import ProxyProcess

SECRETS = {
    "upstream": "canary-upstream-key-5b1f0c",
    "admin": "canary-admin-token-2e9d71aa",
    "caller": "canary-caller-key-7c3a90",
    "sign": "canarySignKey8d4e",
    "redis": "canary-redis-password-31f6",
    "database": "canary-db-password-a07c",
    "wrong caller": "canary-wrong-key-66b2",
    "wrong admin": "canary-wrong-admin-4410",
}


def test_no_secret_is_ever_logged(mock, tmp_path, postgres_url):
    # PostgreSQL's trust authentication ignores the password: it still travels in the URL.
    upgrade(postgres_url)
    url = make_url(postgres_url)
    database = url.set(username=url.username or "postgres", password=SECRETS["database"])
    proxy = ProxyProcess(
        {
            "PROXY_LOG_LEVEL": "debug",
            "PROXY_UPSTREAM_BASE_URL": mock.base_url,
            "PROXY_UPSTREAM_API_KEY": SECRETS["upstream"],
            "PROXY_ADMIN_TOKEN": SECRETS["admin"],
            "PROXY_API_KEYS": SECRETS["caller"],
            "PROXY_CALLBACK_SIGN_KEY": SECRETS["sign"],
            "PROXY_REDIS_URL": REDIS_URL,
            "PROXY_REDIS_PASSWORD": SECRETS["redis"],
            "PROXY_DATABASE_URL": database.render_as_string(hide_password=False),
        }
    ).start()
    try:
        url = proxy.url + "/v1/chat/completions"
        caller = {"Authorization": f"Bearer {SECRETS['caller']}", "X-Task-Id": "secret-task"}
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(url, json=body, headers=caller, timeout=15).status_code == 200
        assert mock.requests[-1].headers["authorization"] == f"Bearer {SECRETS['upstream']}"
        for status in (401, 500, 429):  # upstream failures are logged
            failing = {**body, "mock": {"status": status}}
            assert httpx.post(url, json=failing, headers=caller, timeout=15).status_code >= 400
        streamed = {**body, "stream": True, "mock": {"fail_after_chunks": 2}}
        httpx.post(url, json=streamed, headers=caller, timeout=15)
        wrong = {"Authorization": f"Bearer {SECRETS['wrong caller']}"}
        assert httpx.post(url, json=body, headers=wrong, timeout=15).status_code == 401

        admin = {"Authorization": f"Bearer {SECRETS['admin']}"}
        assert httpx.get(proxy.url + "/admin/tasks", headers=admin, timeout=15).status_code == 200
        for path in ("/admin/keys", "/admin/routes"):
            assert httpx.get(proxy.url + path, headers=admin, timeout=15).status_code == 200
        wrong_admin = {"Authorization": f"Bearer {SECRETS['wrong admin']}"}
        assert httpx.get(proxy.url + "/admin/tasks", headers=wrong_admin).status_code == 401

        event = room.callback_body(905, room.now_ms(), "secret-task", "1", "1", {"Text": "hi"})
        raw = orjson.dumps(event)
        for signature in (sign(SECRETS["sign"], raw), sign("not-the-key", raw)):
            httpx.post(
                proxy.url + "/callbacks/trtc",
                content=raw,
                headers={"Sign": signature, "Content-Type": "application/json"},
                timeout=15,
            )
    finally:
        proxy.stop()
    assert proxy.process is not None and proxy.process.stdout is not None
    logs = proxy.process.stdout.read().decode(errors="replace")
    assert '"level":"debug"' in logs and '"level":"warning"' in logs  # it did log, verbosely
    leaked = [name for name, secret in SECRETS.items() if secret in logs]
    assert leaked == [], f"secrets in the logs: {leaked}"
