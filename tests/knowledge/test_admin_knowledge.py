"""The knowledge admin API through a running proxy, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64

import pytest

from tests.api.conftest import ADMIN_TOKEN, admin_client
from tests.unit.knowledge.test_extract import tiny_pdf

BASES = "/admin/knowledge-bases"


@pytest.fixture
def proxy(make_proxy, migrated_database_url):
    return make_proxy(redis=True, admin_token=ADMIN_TOKEN, database_url=migrated_database_url)


@pytest.fixture
def admin(proxy):
    with admin_client(proxy) as client:
        yield client


def error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def add(admin, source_id: str, content: str, base: str = "store", **fields):
    return admin.post(
        f"{BASES}/{base}/documents", json={"source_id": source_id, "content": content, **fields}
    )


def test_the_admin_token_is_required(proxy):
    with admin_client(proxy, token=None) as anonymous:
        error(anonymous.get(BASES), 401)
    with admin_client(proxy, token="not-the-admin-token-000000") as wrong:
        error(wrong.post(BASES, json={"name": "x"}), 401)


def test_knowledge_bases_are_created_listed_shown_and_deleted(admin):
    created = admin.post(BASES, json={"name": "store", "description": "FAQ", "chunk_tokens": 120})
    assert created.status_code == 201, created.text
    assert created.json() | {"created_at": None, "updated_at": None} == {
        "name": "store",
        "description": "FAQ",
        "chunk_tokens": 120,
        "chunk_overlap_tokens": 40,
        "documents": 0,
        "chunks": 0,
        "created_at": None,
        "updated_at": None,
    }
    assert error(admin.post(BASES, json={"name": "store"}), 409)["code"] == "conflict"
    error(admin.post(BASES, json={"name": "bad name!"}), 422)
    error(
        admin.post(BASES, json={"name": "x", "chunk_tokens": 50, "chunk_overlap_tokens": 50}), 422
    )
    assert [b["name"] for b in admin.get(BASES).json()] == ["store"]
    assert add(admin, "a", "Gift cards never expire.").status_code == 201
    shown = admin.get(f"{BASES}/store").json()
    assert (shown["documents"], shown["chunks"]) == (1, 1)
    error(admin.get(f"{BASES}/missing"), 404)
    assert admin.delete(f"{BASES}/store").status_code == 204
    error(admin.delete(f"{BASES}/store"), 404)
    error(admin.get(f"{BASES}/store"), 404)


def test_a_knowledge_base_description_is_changed_and_cleared(admin):
    assert admin.post(BASES, json={"name": "store", "description": "FAQ"}).status_code == 201
    assert add(admin, "a", "Opening hours are nine to five.").status_code == 201
    changed = admin.patch(f"{BASES}/store", json={"description": "Shop FAQ"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["description"] == "Shop FAQ" and changed.json()["documents"] == 1
    assert admin.get(f"{BASES}/store").json()["description"] == "Shop FAQ"
    assert admin.patch(f"{BASES}/store", json={"description": None}).json()["description"] is None
    error(admin.patch(f"{BASES}/nope", json={"description": "x"}), 404)
    error(admin.patch(f"{BASES}/store", json={"description": "x" * 4001}), 422)
    error(admin.patch(f"{BASES}/store", json={"description": "a\u0000b"}), 422)
    error(admin.patch(f"{BASES}/store", json={"chunk_tokens": 100}), 422)


def test_documents_are_added_replaced_listed_and_deleted(admin):
    admin.post(BASES, json={"name": "store"})
    added = add(
        admin, "returns", "<h1>Returns</h1><p>Within 30 days.</p>", content_type="text/html"
    )
    assert added.status_code == 201, added.text
    document = added.json()
    assert (document["title"], document["chunk_count"], document["content_type"]) == (
        "Returns",
        1,
        "text/html",
    )
    replaced = add(admin, "returns", "Returns are accepted within 60 days.", title="Returns v2")
    assert replaced.status_code == 201 and replaced.json()["id"] == document["id"]
    listing = admin.get(f"{BASES}/store/documents").json()
    assert listing["total"] == 1 and listing["items"][0]["title"] == "Returns v2"
    shown = admin.get(f"{BASES}/store/documents/{document['id']}")
    assert shown.json()["content_hash"] == replaced.json()["content_hash"]
    assert admin.delete(f"{BASES}/store/documents/{document['id']}").status_code == 204
    error(admin.delete(f"{BASES}/store/documents/{document['id']}"), 404)
    assert admin.get(f"{BASES}/store/documents").json()["total"] == 0


def test_bad_documents_are_refused(admin):
    admin.post(BASES, json={"name": "store"})
    error(add(admin, "x", "text", base="missing"), 404)
    assert error(add(admin, "x", "text", content_type="image/png"), 422)["param"] == "content_type"
    error(add(admin, "x", "   "), 422)
    error(add(admin, "x", "not base64!", encoding="base64"), 422)
    error(admin.post(f"{BASES}/store/documents", json={"content": "no source id"}), 422)
    error(admin.post(f"{BASES}/store/documents", content=b"{not json"), 422)
    huge = "x" * (10 * 1024 * 1024 + 1)
    assert error(add(admin, "x", huge), 413)["code"] == "body_too_large"
    assert admin.get(f"{BASES}/store").json()["documents"] == 0


def test_a_pdf_is_uploaded_as_base64(admin):
    admin.post(BASES, json={"name": "store"})
    pdf = base64.b64encode(tiny_pdf("Warranty covers two years.", "Warranty")).decode()
    added = add(admin, "w.pdf", pdf, content_type="application/pdf", encoding="base64")
    assert added.status_code == 201, added.text
    assert added.json()["title"] == "Warranty"
    hits = admin.post(f"{BASES}/store/search", json={"query": "warranty years"}).json()
    assert hits["results"][0]["source_id"] == "w.pdf"


def test_search_shows_ranked_chunks_with_scores(admin):
    admin.post(BASES, json={"name": "store"})
    add(admin, "hours", "We open at nine and close at nine.", title="Hours")
    add(admin, "parking", "Parking is free for two hours.", title="Parking")
    add(admin, "zh", "门店每天早上九点开门。", title="营业时间")
    found = admin.post(f"{BASES}/store/search", json={"query": "When do you open?", "top_k": 2})
    assert found.status_code == 200, found.text
    results = found.json()["results"]
    assert [r["source_id"] for r in results] == ["hours"]
    assert results[0]["rank"] == 1 and results[0]["score"] > 0 and results[0]["tokens"] > 0
    assert (
        admin.post(f"{BASES}/store/search", json={"query": "几点开门"}).json()["results"][0][
            "title"
        ]
        == "营业时间"
    )
    error(admin.post(f"{BASES}/missing/search", json={"query": "x"}), 404)
    error(admin.post(f"{BASES}/store/search", json={"query": ""}), 422)


def test_a_restarted_proxy_serves_what_was_stored(make_proxy, migrated_database_url):
    settings = {"redis": True, "admin_token": ADMIN_TOKEN, "database_url": migrated_database_url}
    first = make_proxy(**settings)
    with admin_client(first) as admin:
        admin.post(BASES, json={"name": "store"})
        add(admin, "gift", "Gift cards never expire.")
    first.stop()
    with admin_client(make_proxy(**settings)) as admin:
        results = admin.post(f"{BASES}/store/search", json={"query": "gift card"}).json()["results"]
    assert [r["source_id"] for r in results] == ["gift"]


def test_documents_are_embedded_when_an_endpoint_is_configured(make_proxy, sqlite_url, embeddings):
    from proxy.db.migrate import upgrade

    upgrade(sqlite_url)
    proxy = make_proxy(
        admin_token=ADMIN_TOKEN, database_url=sqlite_url, embeddings_base_url=embeddings.base_url
    )
    with admin_client(proxy) as admin:
        admin.post(BASES, json={"name": "store"})
        add(admin, "a", "Shipments leave daily.")
        add(admin, "b", "Roses need water.")
        results = admin.post(f"{BASES}/store/search", json={"query": "shipping"}).json()["results"]
    assert embeddings.requests, "the documents were not embedded"
    assert results[0]["source_id"] == "a"  # found by the vectors alone: no word in common
    assert results[0]["score"] == pytest.approx(1 / 61)
