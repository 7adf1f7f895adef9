"""The console in a real browser (Debian's chromium through Playwright), with no internet.

A scripted engine conversation with a barge-in runs against a real proxy (real Redis, the
mock upstream, signed callbacks), then the browser logs in and reads the task's timeline.
Screenshots go to ``test-artifacts/console/``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from proxy.dev.voice.engine import EngineConfig, SessionResult, run_session
from tests.api.conftest import ADMIN_TOKEN
from tests.console.conftest import CHROMIUM, offline_page

playwright_api = pytest.importorskip("playwright.sync_api")

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
CALLBACK_KEY = "consoleCallbackKey1"
ENGINE_KEY = "engine-key-for-console-tests-0123"
APP = "1400000001"
STORY = (
    "Once upon a time a small ship sailed across the quiet sea under a silver moon, "
    "far from home, and the sailors sang about the harbour they had left behind."
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed"),
]


def converse(proxy, task_id: str, turns: list[dict]) -> SessionResult:
    config = EngineConfig(
        url=proxy.base_url + "/chat/completions",
        model="gpt-test",
        api_key=ENGINE_KEY,
        task_id=task_id,
        sdk_app_id=APP,
        room_id="room-7",
        user_id="caller-42",
        callback_url=proxy.url + "/callbacks/trtc",
        callback_key=CALLBACK_KEY,
        chars_per_second=15,
    )
    # In a thread of its own: Playwright's sync API runs an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run_session(config, turns)).result(timeout=60)


@pytest.fixture
def proxy(make_proxy):
    return make_proxy(
        redis=True,
        admin_token=ADMIN_TOKEN,
        callback_sign_key=CALLBACK_KEY,
        api_keys=[ENGINE_KEY],  # callers need a key: a revoked one stops working
    )


def test_the_timeline_shows_what_was_said_heard_and_cut(proxy, mock, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    result = converse(
        proxy,
        "sea-story",
        [
            {"say": "Hello, who are you?", "mock": {"reply": "I am your voice agent."}},
            {
                "say": "Tell me a long story about the sea.",
                "mock": {"reply": STORY, "chunks": 30},
                "interrupt_at_chars": 40,
            },
            {"say": "What did you just tell me?", "mock": {"reply": "A story about a ship."}},
        ],
    )
    heard = result.rounds[1].spoken_text
    assert heard and STORY.startswith(heard) and len(heard) < len(STORY)

    outside: list[str] = []
    context, page = offline_page(browser, proxy, outside)
    page.goto(proxy.url + "/console")
    assert page.url == proxy.url + "/console/login"
    page.fill("input[type=password]", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(proxy.url + "/console/tasks")
    (cookie,) = [c for c in context.cookies() if c["name"] == "console_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert ADMIN_TOKEN not in page.url and ADMIN_TOKEN not in cookie["value"]

    task_key = f"{APP}:sea-story"
    page.fill("input[name=room_id]", "room-7")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/console/tasks?*room_id=room-7*")
    assert page.locator("table.tasks tbody tr").count() == 1
    page.screenshot(path=str(ARTIFACTS / "tasks.png"), full_page=True)
    page.click(f"text={task_key}")
    page.wait_for_url(f"**/console/tasks/{quote(task_key)}")

    rows = page.locator("table.timeline tbody tr.round")
    assert rows.count() == 3
    story = rows.nth(1)
    assert story.locator(".user .words").inner_text() == "Tell me a long story about the sea."
    assert story.locator(".heard").inner_text().startswith(heard)
    unheard = story.locator("del.unheard").inner_text()
    assert heard.rstrip() + unheard == STORY or heard + unheard == STORY
    assert story.locator(".badge.interrupted").inner_text() == "interrupted"
    assert rows.nth(0).locator(".badge.interrupted").count() == 0
    assert rows.nth(2).locator(".heard").inner_text() == "A story about a ship."
    # The latency chart: stacked proxy / upstream / engine segments for every round.
    for index in range(3):
        bars = rows.nth(index).locator("svg.latency rect")
        kinds = {bars.nth(i).get_attribute("class") for i in range(bars.count())}
        assert {"proxy", "upstream"} <= kinds, kinds
    assert "llm_first_token" in story.locator("td.figures").nth(1).inner_text()
    page.screenshot(path=str(ARTIFACTS / "timeline.png"), full_page=True)

    page.goto(proxy.url + "/console/usage?group_by=model")
    assert page.locator("table.usage tbody tr").count() == 1
    assert page.locator("p.totals").inner_text().startswith(f"{len(mock.requests)} requests")
    assert page.locator("svg.usage-chart rect").count() == 3
    page.screenshot(path=str(ARTIFACTS / "usage.png"), full_page=True)
    assert outside == []
    context.close()


def test_the_task_list_updates_live(proxy, mock, browser):
    converse(proxy, "first-call", [{"say": "hi", "mock": {"reply": "Hello."}}])
    outside: list[str] = []
    context, page = offline_page(browser, proxy, outside)
    page.goto(proxy.url + "/console/login")
    page.fill("input[type=password]", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(proxy.url + "/console/tasks")
    assert page.locator("table.tasks tbody tr").count() == 1
    converse(proxy, "second-call", [{"say": "hi again", "mock": {"reply": "Hello again."}}])
    # No reload: the new task arrives over the page's event stream.
    page.wait_for_selector(f"text={APP}:second-call", timeout=10_000)
    assert page.locator("table.tasks tbody tr").count() == 2
    assert outside == []
    context.close()


def test_keys_are_created_once_shown_and_revoked(proxy, browser):
    outside: list[str] = []
    context, page = offline_page(browser, proxy, outside)
    page.goto(proxy.url + "/console/login")
    page.fill("input[type=password]", "wrong-token-0123456789")
    page.click("button[type=submit]")
    assert "not the admin token" in page.inner_text("main")
    page.fill("input[type=password]", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.goto(proxy.url + "/console/keys")
    page.fill("input[name=name]", "studio-engine")
    page.fill("input[name=max_tokens_per_day]", "50000")
    page.click("form.new-key button[type=submit]")
    key = page.locator("code.secret").inner_text()
    assert key.startswith("vp-")
    chat = httpx.post(
        proxy.base_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert chat.status_code == 200
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("form[action$='/revoke'] button")
    page.wait_for_selector("text=key revoked")
    assert "revoked" in page.locator("table tbody tr").first.inner_text()
    refused = httpx.post(
        proxy.base_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert refused.status_code == 401
    page.reload()
    assert key not in page.content()  # shown once
    # A form posted without the page's CSRF token is refused, even with the session cookie.
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    forged = httpx.post(proxy.url + "/console/keys", data={"name": "forged"}, cookies=cookies)
    assert forged.status_code == 403
    assert outside == []
    context.close()


def test_swagger_ui_renders_offline(proxy, browser):
    outside: list[str] = []
    context, page = offline_page(browser, proxy, outside)
    page.goto(proxy.url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=10_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/chat/completions" in [p.replace("\u200b", "") for p in paths]
    assert "/admin/usage" in [p.replace("\u200b", "") for p in paths]
    page.screenshot(path=str(ARTIFACTS / "docs.png"))
    assert outside == []
    context.close()
