"""Managing keys, knowledge bases, profiles, routes and tools through the console pages
in a real browser (offline), with each change checked where it takes effect."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.conftest import ADMIN_TOKEN, admin_client
from tests.console.conftest import log_in, offline_page

pytestmark = pytest.mark.slow
ENGINE_KEY = "engine-key-for-console-tests-0123"


@pytest.fixture
def proxy(make_proxy):
    return make_proxy(redis=True, admin_token=ADMIN_TOKEN, api_keys=[ENGINE_KEY])


def chat(proxy, key: str, model: str = "m") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers)


def test_a_key_is_edited_and_the_new_limit_applies(proxy, mock, browser):
    outside: list[str] = []
    context, page = offline_page(browser, proxy, outside)
    log_in(page, proxy, ADMIN_TOKEN)
    page.goto(proxy.url + "/console/keys")
    page.fill("form.new-key input[name=name]", "studio-engine")
    page.fill("form.new-key input[name=app_id]", "1400000001")
    page.click("form.new-key button[type=submit]")
    key = page.locator("code.secret").inner_text()
    assert chat(proxy, key).status_code == 200
    assert chat(proxy, key).status_code == 200

    row = page.locator("tr", has_text="studio-engine")
    row.locator("details.edit-key summary").click()
    edit = row.locator("form[action$='/edit']")
    assert edit.locator("input[name=name]").input_value() == "studio-engine"
    edit.locator("input[name=name]").fill("studio-engine-2")
    edit.locator("input[name=rate_limit_per_minute]").fill("1")
    edit.locator("input[name=max_tokens_per_day]").fill("7000")
    edit.locator("button[type=submit]").click()
    page.wait_for_selector("text=key studio-engine-2 saved")
    row = page.locator("tr", has_text="studio-engine-2")
    cells = row.locator("td").all_inner_texts()
    assert cells[3] == "1400000001" and cells[5] == "1" and cells[6] == "7000", cells

    # The same secret: one request more this minute, then the new limit refuses (fixed
    # one-minute windows: of two more requests one shares a window with an earlier one).
    assert chat(proxy, key).status_code == 200
    assert 429 in [chat(proxy, key).status_code for _ in range(2)]
    with admin_client(proxy) as admin:
        (stored,) = [k for k in admin.get("/admin/keys").json() if k["name"] == "studio-engine-2"]
    assert stored["rate_limit_per_minute"] == 1 and stored["max_tokens_per_day"] == 7000

    # A bad value comes back on the page, and changes nothing.
    row.locator("details.edit-key summary").click()
    row.locator("form[action$='/edit'] input[name=rate_limit_per_minute]").fill("0")
    row.locator("form[action$='/edit'] button[type=submit]").click()
    assert "rate_limit_per_minute" in page.locator("p.error").inner_text()
    with admin_client(proxy) as admin:
        assert admin.get(f"/admin/keys/{stored['id']}").json()["rate_limit_per_minute"] == 1
    # Without the page's CSRF token the edit is refused, even with the session cookie.
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    forged = httpx.post(
        proxy.url + f"/console/keys/{stored['id']}/edit", data={"name": "x"}, cookies=cookies
    )
    assert forged.status_code == 403
    assert outside == []
    context.close()


def test_a_knowledge_base_is_described_and_its_documents_listed_and_deleted(proxy, browser):
    outside: list[str] = []
    context, page = offline_page(browser, proxy, outside)
    log_in(page, proxy, ADMIN_TOKEN)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(proxy.url + "/console/knowledge")
    page.fill("form.new-base input[name=name]", "store")
    page.fill("form.new-base input[name=description]", "FAQ")
    page.click("form.new-base button[type=submit]")
    page.wait_for_selector("text=store created")
    base = page.locator("tr.base[data-base=store]")
    for title, text in [("Hours", "We open at nine."), ("Returns", "Returns take a week.")]:
        base.locator("form[action$='/documents'] input[name=title]").fill(title)
        base.locator("form[action$='/documents'] textarea[name=content]").fill(text)
        base.locator("form[action$='/documents'] button").click()
        page.wait_for_selector(f"tr.document >> text={title}")
    documents = page.locator("tr.documents[data-base=store] tr.document")
    assert documents.count() == 2
    assert "Hours" in documents.nth(0).inner_text() + documents.nth(1).inner_text()

    base.locator("details.edit-base summary").click()
    base.locator("form[action$='/describe'] textarea").fill("Shop questions and answers")
    base.locator("form[action$='/describe'] button").click()
    page.wait_for_selector("text=store saved")
    assert base.locator(".description").inner_text() == "Shop questions and answers"

    page.locator("tr.document", has_text="Hours").locator("form button").click()
    page.wait_for_selector("text=document deleted")
    assert page.locator("tr.document").count() == 1
    with admin_client(proxy) as admin:
        stored = admin.get("/admin/knowledge-bases/store").json()
        listed = admin.get("/admin/knowledge-bases/store/documents").json()["items"]
    assert stored["description"] == "Shop questions and answers" and stored["documents"] == 1
    assert [d["title"] for d in listed] == ["Returns"]

    # A description over the limit comes back on the page and changes nothing.
    base.locator("details.edit-base summary").click()
    base.locator("form[action$='/describe'] textarea").evaluate(
        "t => t.removeAttribute('maxlength')"
    )
    base.locator("form[action$='/describe'] textarea").fill("x" * 4001)
    base.locator("form[action$='/describe'] button").click()
    assert "description" in page.locator("p.error").inner_text()
    with admin_client(proxy) as admin:
        stored = admin.get("/admin/knowledge-bases/store").json()
    assert stored["description"] == "Shop questions and answers"
    assert outside == []
    context.close()


def save_entry(page, kind: str, name: str, spec: dict) -> None:
    page.fill("#edit-name", name)
    page.fill("#edit-spec", json.dumps(spec))
    page.click("form.editor button[type=submit]")
    page.wait_for_url(f"**/console/{kind}?flash=*")
    assert page.locator("p.flash").inner_text() == f"{name} saved"


def edit_entry(page, kind: str, name: str, change: dict) -> dict:
    """The row's Edit button loads its settings into the editor; change some, save."""
    page.locator("tr", has_text=name).locator("button.edit").click()
    assert page.input_value("#edit-name") == name
    spec = json.loads(page.input_value("#edit-spec"))
    save_entry(page, kind, name, {**spec, **change})
    return spec


def delete_entry(page, kind: str, name: str) -> None:
    page.locator("tr", has_text=name).locator("form[action$='/delete'] button").click()
    page.wait_for_selector(f"text={name} deleted")
    assert page.locator("tbody tr", has_text=name).count() == 0


def test_profiles_routes_and_tools_are_created_edited_and_deleted(
    proxy, mock, browser, monkeypatch
):
    monkeypatch.setenv("TEST_ROUTE_KEY", "route-key-0123456789")
    outside: list[str] = []
    context, page = offline_page(browser, proxy, outside)
    log_in(page, proxy, ADMIN_TOKEN)
    page.on("dialog", lambda dialog: dialog.accept())
    admin = admin_client(proxy)

    # A profile: its system prompt reaches the upstream for a key bound to it.
    page.goto(proxy.url + "/console/profiles")
    save_entry(page, "profiles", "concierge", {"system_prompt": "You are the concierge."})
    key = admin.post("/admin/keys", json={"name": "hotel", "profile": "concierge"}).json()["key"]
    assert chat(proxy, key).status_code == 200
    assert mock.requests[-1].body["messages"][0]["content"] == "You are the concierge."
    before = edit_entry(page, "profiles", "concierge", {"system_prompt": "You are the bellboy."})
    assert before["system_prompt"] == "You are the concierge."
    assert chat(proxy, key).status_code == 200
    assert mock.requests[-1].body["messages"][0]["content"] == "You are the bellboy."
    # Bad JSON or a bad setting comes back with the draft kept, and changes nothing.
    page.fill("#edit-name", "concierge")
    page.fill("#edit-spec", '{"system_prompt": ')
    page.click("form.editor button[type=submit]")
    assert "not valid JSON" in page.locator("p.error").inner_text()
    assert page.input_value("#edit-spec") == '{"system_prompt":'  # trimmed, kept
    delete_entry(page, "profiles", "concierge")
    assert admin.get("/admin/profiles/concierge").status_code == 404

    # A route: the alias goes to the route's target model, then to the edited one.
    page.goto(proxy.url + "/console/routes")
    target = {"base_url": mock.base_url, "api_key_env": "TEST_ROUTE_KEY", "model": "first"}
    save_entry(page, "routes", "voice", {"targets": [target]})
    assert chat(proxy, ENGINE_KEY, model="voice").status_code == 200
    assert mock.requests[-1].body["model"] == "first"
    edit_entry(page, "routes", "voice", {"targets": [{**target, "model": "second"}]})
    assert chat(proxy, ENGINE_KEY, model="voice").status_code == 200
    assert mock.requests[-1].body["model"] == "second"
    delete_entry(page, "routes", "voice")
    assert chat(proxy, ENGINE_KEY, model="voice").status_code == 200
    assert mock.requests[-1].body["model"] == "voice"  # back to the default upstream

    # A tool.
    page.goto(proxy.url + "/console/tools")
    tool = {"description": "Look up the weather", "url": "https://example.com/weather"}
    save_entry(page, "tools", "get_weather", tool)
    assert admin.get("/admin/tools/get_weather").json()["timeout_seconds"] == 5.0
    edit_entry(page, "tools", "get_weather", {"timeout_seconds": 2.5, "filler": "Let me see."})
    stored = admin.get("/admin/tools/get_weather").json()
    assert stored["timeout_seconds"] == 2.5 and stored["filler"] == "Let me see."
    assert stored["url"] == "https://example.com/weather"
    delete_entry(page, "tools", "get_weather")
    assert admin.get("/admin/tools/get_weather").status_code == 404
    admin.close()
    assert outside == []
    context.close()
