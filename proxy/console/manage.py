"""Console pages for keys, profiles, routes, tools and knowledge bases.

Every change goes through the admin services (``proxy.admin``; knowledge bases through
the admin API's handlers), with the parsed form: the same validation, config read-only
rules and cache refresh as the HTTP API and the CLI. Errors come back to the page.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

from proxy.admin.models import (
    KeyCreate,
    KeyOut,
    KeyUpdate,
    ProfileCreate,
    ProfileIn,
    RouteIn,
    ToolCreate,
    ToolIn,
)
from proxy.api import admin_knowledge
from proxy.api.admin_services import admin_services
from proxy.console.session import Session
from proxy.console.web import PREFIX, Form, back, current_session, page, read_form
from proxy.errors import InvalidRequest, NotFound, ProxyError
from proxy.knowledge.schemas import (
    DocumentIn,
    DocumentPage,
    KnowledgeBaseCreate,
    KnowledgeBaseOut,
    KnowledgeBaseUpdate,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)
SessionDep = Annotated[Session, Depends(current_session)]
T = TypeVar("T")
DOCUMENTS_SHOWN = 100  # per knowledge base; the admin API pages through the rest


def _problem(exc: Exception) -> str:
    if isinstance(exc, ProxyError):
        return exc.message
    if isinstance(exc, ValidationError | RequestValidationError):
        errors = exc.errors()
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
            for e in errors
        )
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc}"
    raise exc


async def _attempt(work: Awaitable[T]) -> tuple[T | None, str | None]:
    try:
        return await work, None
    except (ProxyError, ValidationError, RequestValidationError, json.JSONDecodeError) as exc:
        return None, _problem(exc)


def _json(form: Form, name: str) -> Any:
    text = form.text(name)
    return json.loads(text) if text else {}


# Keys.


@router.get("/keys")
async def keys(request: Request, session: SessionDep) -> Response:
    listed = await admin_services(request).keys.list()
    return page(request, "keys.html", session, keys=listed, created=None, error=None)


@router.post("/keys")
async def create_key(request: Request, session: SessionDep) -> Response:
    form = await read_form(request, session)

    async def create() -> Any:
        body = KeyCreate(
            name=form.text("name"),
            app_id=form.optional("app_id"),
            profile=form.optional("profile"),
            rate_limit_per_minute=form.number("rate_limit_per_minute"),
            max_tokens_per_day=form.number("max_tokens_per_day"),
            max_cost_per_day=form.number("max_cost_per_day", float),
        )
        return await admin_services(request).keys.create(body)

    created, error = await _attempt(create())
    listed = await admin_services(request).keys.list()
    status = 200 if error is None else 422
    return page(request, "keys.html", session, status, keys=listed, created=created, error=error)


@router.post("/keys/{key_id}/{action}")
async def change_key(key_id: str, action: str, request: Request, session: SessionDep) -> Response:
    form = await read_form(request, session)
    keys = admin_services(request).keys
    if action == "edit":
        _, error = await _attempt(_edit_key(request, key_id, form))
        if error is not None:
            listed = await keys.list()
            return page(request, "keys.html", session, 422, keys=listed, created=None, error=error)
        return back("/keys", f"key {form.text('name')} saved")
    if action == "revoke":
        work: Awaitable[Any] = keys.revoke(key_id)
    elif action == "delete":
        work = keys.delete(key_id)
    else:
        raise NotFound(f"no action {action!r}")
    _, error = await _attempt(work)
    return back("/keys", error or f"key {action}d")


async def _edit_key(request: Request, key_id: str, form: Form) -> KeyOut:
    """Every field is on the form: an empty one clears that limit (or the profile)."""
    body = KeyUpdate(
        name=form.text("name"),
        profile=form.optional("profile"),
        rate_limit_per_minute=form.number("rate_limit_per_minute"),
        max_tokens_per_day=form.number("max_tokens_per_day"),
        max_cost_per_day=form.number("max_cost_per_day", float),
    )
    return await admin_services(request).keys.update(key_id, body)


# Profiles, routes and tools: a list, and a JSON editor per entry.


async def _editor(
    request: Request,
    session: Session,
    kind: str,
    error: str | None = None,
    draft: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    example: dict[str, Any]
    admin = admin_services(request)
    if kind == "profiles":
        items = [p.model_dump(mode="json") for p in await admin.profiles.list()]
        key, example = "name", {"system_prompt": "You are a helpful voice agent.", "model": None}
    elif kind == "routes":
        items = [r.model_dump(mode="json") for r in await admin.routes.list()]
        key = "alias"
        example = {
            "targets": [
                {
                    "base_url": "https://api.openai.com/v1",
                    "api_key_env": "OPENAI_API_KEY",
                    "model": "gpt-4o-mini",
                }
            ]
        }
    else:
        items = [t.model_dump(mode="json") for t in await admin.tools.list()]
        key = "name"
        example = {
            "description": "Look up the weather",
            "url": "https://example.com/weather",
            "parameters": {"type": "object", "properties": {}},
        }
    editable = {item[key]: _spec(item, key) for item in items}
    return page(
        request,
        "editor.html",
        session,
        status,
        kind=kind,
        key=key,
        items=items,
        editable=editable,
        example=json.dumps(example, indent=2),
        error=error,
        draft=draft or {},
    )


READ_ONLY = {"origin", "created_at", "updated_at", "documents", "chunks"}


def _spec(item: dict[str, Any], key: str) -> str:
    spec = {k: v for k, v in item.items() if k not in READ_ONLY and k != key}
    return json.dumps(spec, indent=2)


EDITED = ("profiles", "routes", "tools")


def _kind(request: Request) -> str:
    kind = request.url.path.removeprefix(PREFIX + "/").split("/")[0]
    if kind not in EDITED:
        raise NotFound(f"no console page {kind!r}")
    return kind


async def editor(request: Request, session: SessionDep) -> Response:
    return await _editor(request, session, _kind(request))


async def save(request: Request, session: SessionDep) -> Response:
    kind = _kind(request)
    form = await read_form(request, session)
    name = form.text("name")

    async def store() -> Any:
        spec = _json(form, "spec")
        if not name:
            raise InvalidRequest("a name is needed", param="name")
        admin = admin_services(request)
        if kind == "profiles":
            if name not in {p.name for p in await admin.profiles.list()}:
                return await admin.profiles.create(
                    ProfileCreate.model_validate({**spec, "name": name})
                )
            return await admin.profiles.replace(name, ProfileIn.model_validate(spec))
        if kind == "routes":
            return await admin.routes.put(name, RouteIn.model_validate(spec))
        if name not in {t.name for t in await admin.tools.list()}:
            return await admin.tools.create(ToolCreate.model_validate({**spec, "name": name}))
        return await admin.tools.replace(name, ToolIn.model_validate(spec))

    _, error = await _attempt(store())
    if error is not None:
        draft = {"name": name, "spec": form.text("spec")}
        return await _editor(request, session, kind, error, draft, 422)
    return back(f"/{kind}", f"{name} saved")


async def delete(name: str, request: Request, session: SessionDep) -> Response:
    kind = request.url.path.removeprefix(PREFIX + "/").split("/")[0]
    await read_form(request, session)
    admin = admin_services(request)
    deleters = {
        "profiles": admin.profiles.delete,
        "routes": admin.routes.delete,
        "tools": admin.tools.delete,
    }
    if kind == "knowledge":
        work: Awaitable[Any] = admin_knowledge.delete_base(name, request)
    elif kind in deleters:
        work = deleters[kind](name)
    else:
        raise NotFound(f"no console page {kind!r}")
    _, error = await _attempt(work)
    return back(f"/{kind}", error or f"{name} deleted")


# Knowledge bases.


@router.get("/knowledge")
async def knowledge(request: Request, session: SessionDep) -> Response:
    return await _knowledge_page(request, session)


async def _knowledge_page(
    request: Request, session: Session, error: str | None = None, status: int = 200
) -> Response:
    bases, problem = await _attempt(admin_knowledge.list_bases(request))
    documents: dict[str, DocumentPage] = {}
    for base in bases or []:
        listed, trouble = await _attempt(
            admin_knowledge.list_documents(base.name, request, limit=DOCUMENTS_SHOWN)
        )
        if listed is not None:
            documents[base.name] = listed
        problem = problem or trouble
    return page(
        request,
        "knowledge.html",
        session,
        status,
        bases=bases or [],
        documents=documents,
        error=error or problem,
    )


@router.post("/knowledge/{name}/describe")
async def describe_base(name: str, request: Request, session: SessionDep) -> Response:
    form = await read_form(request, session)

    async def describe() -> KnowledgeBaseOut:
        body = KnowledgeBaseUpdate(description=form.optional("description"))
        return await admin_knowledge.update_base(name, body, request)

    _, error = await _attempt(describe())
    if error is not None:
        return await _knowledge_page(request, session, error, 422)
    return back("/knowledge", f"{name} saved")


@router.post("/knowledge/{name}/documents/{document_id}/delete")
async def delete_document(
    name: str, document_id: str, request: Request, session: SessionDep
) -> Response:
    await read_form(request, session)
    _, error = await _attempt(admin_knowledge.delete_document(name, document_id, request))
    return back("/knowledge", error or "document deleted")


@router.post("/knowledge")
async def create_base(request: Request, session: SessionDep) -> Response:
    form = await read_form(request, session)

    async def create() -> Any:
        body = KnowledgeBaseCreate(name=form.text("name"), description=form.optional("description"))
        return await admin_knowledge.create_base(body, request)

    _, error = await _attempt(create())
    if error is not None:
        return await _knowledge_page(request, session, error, 422)
    return back("/knowledge", f"{form.text('name')} created")


@router.post("/knowledge/{name}/documents")
async def add_document(name: str, request: Request, session: SessionDep) -> Response:
    form = await read_form(request, session)

    async def add() -> Any:
        body = DocumentIn.model_validate(
            {
                "source_id": form.text("source_id") or form.text("title"),
                "title": form.optional("title"),
                "content": form.text("content"),
            }
        )
        knowledge = admin_knowledge._knowledge(request)
        return await admin_knowledge._stored(
            knowledge.add_document(
                name,
                source_id=body.source_id,
                content=body.payload(),
                content_type=body.content_type,
                title=body.title,
                url=body.url,
            )
        )

    _, error = await _attempt(add())
    if error is not None:
        return await _knowledge_page(request, session, error, 422)
    return back("/knowledge", "document added")


for _kind_name in (*EDITED, "knowledge"):
    if _kind_name != "knowledge":
        router.add_api_route(f"/{_kind_name}", editor, methods=["GET"])
        router.add_api_route(f"/{_kind_name}", save, methods=["POST"])
    router.add_api_route(f"/{_kind_name}/{{name}}/delete", delete, methods=["POST"])
