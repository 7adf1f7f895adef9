"""Admin API: knowledge bases, their documents, and a search to check what they return.

Uploads are JSON (``content`` as text, or base64 for PDF; python-multipart is not a
dependency). A document's content may be up to 10 MB. Changes update this replica's
retrieval index at once; other replicas reload a changed base when they next poll.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from proxy.admin.store import database_errors
from proxy.api.chat import read_body
from proxy.errors import BodyTooLarge, InvalidRequest, ServiceUnavailable
from proxy.knowledge.errors import DocumentNotFound, KnowledgeBaseNotFound
from proxy.knowledge.ingest import IngestService
from proxy.knowledge.retrieval import Retriever
from proxy.knowledge.schemas import (
    MAX_DOCUMENT_BYTES,
    DocumentIn,
    DocumentOut,
    DocumentPage,
    KnowledgeBaseCreate,
    KnowledgeBaseOut,
    KnowledgeBaseUpdate,
    SearchHit,
    SearchIn,
    SearchOut,
)
from proxy.services import services

router = APIRouter(tags=["knowledge"])

T = TypeVar("T")
BaseName = Annotated[str, Path(max_length=64)]
MAX_BODY_BYTES = MAX_DOCUMENT_BYTES * 4 // 3 + 65_536  # base64 of the largest document


def _knowledge(request: Request) -> IngestService:
    service = services(request).knowledge
    if service is None:
        raise ServiceUnavailable("knowledge bases are not enabled in this process")
    return service


def _retriever(request: Request) -> Retriever:
    retriever = services(request).retriever
    if retriever is None:
        raise ServiceUnavailable("knowledge bases are not enabled in this process")
    return retriever


async def _stored(operation: Awaitable[T]) -> T:
    """A database call; failures leave as 409 / 422 / 503, not as internal errors."""
    with database_errors():
        return await operation


# Knowledge bases.


@router.post(
    "/knowledge-bases",
    summary="Create a knowledge base",
    response_model=KnowledgeBaseOut,
    status_code=status.HTTP_201_CREATED,
)
async def create_base(body: KnowledgeBaseCreate, request: Request) -> KnowledgeBaseOut:
    summary = await _stored(
        _knowledge(request).create_base(
            body.name, body.description, body.chunk_tokens, body.chunk_overlap_tokens
        )
    )
    return KnowledgeBaseOut.from_summary(summary)


@router.get(
    "/knowledge-bases", summary="List knowledge bases", response_model=list[KnowledgeBaseOut]
)
async def list_bases(request: Request) -> list[KnowledgeBaseOut]:
    summaries = await _stored(_knowledge(request).list_bases())
    return [KnowledgeBaseOut.from_summary(summary) for summary in summaries]


@router.get(
    "/knowledge-bases/{name}",
    summary="One knowledge base, with its document and chunk counts",
    response_model=KnowledgeBaseOut,
)
async def get_base(name: BaseName, request: Request) -> KnowledgeBaseOut:
    return KnowledgeBaseOut.from_summary(await _stored(_knowledge(request).get_base(name)))


@router.patch(
    "/knowledge-bases/{name}",
    summary="Change a knowledge base's description",
    response_model=KnowledgeBaseOut,
)
async def update_base(
    name: BaseName, body: KnowledgeBaseUpdate, request: Request
) -> KnowledgeBaseOut:
    summary = await _stored(_knowledge(request).describe_base(name, body.description))
    return KnowledgeBaseOut.from_summary(summary)


@router.delete(
    "/knowledge-bases/{name}",
    summary="Delete a knowledge base and all its documents",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_base(name: BaseName, request: Request) -> None:
    if not await _stored(_knowledge(request).delete_base(name)):
        raise KnowledgeBaseNotFound(f"no knowledge base {name!r}")


# Documents.


@router.post(
    "/knowledge-bases/{name}/documents",
    summary="Add a document, or replace the one with the same source_id",
    response_model=DocumentOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": DocumentIn.model_json_schema()}},
        }
    },
)
async def add_document(name: BaseName, request: Request) -> DocumentOut:
    # The body is read here, not by FastAPI, to refuse an oversized upload early (413).
    raw = await read_body(request, MAX_BODY_BYTES)
    try:
        body = DocumentIn.model_validate_json(raw)
        content = body.payload()
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from exc
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="content", status=422) from exc
    size = len(content.encode() if isinstance(content, str) else content)
    if size > MAX_DOCUMENT_BYTES:
        raise BodyTooLarge(f"the document exceeds {MAX_DOCUMENT_BYTES} bytes")
    document = await _stored(
        _knowledge(request).add_document(
            name,
            source_id=body.source_id,
            content=content,
            content_type=body.content_type,
            title=body.title,
            url=body.url,
        )
    )
    return DocumentOut.from_row(document)


@router.get(
    "/knowledge-bases/{name}/documents",
    summary="List a knowledge base's documents (by source_id)",
    response_model=DocumentPage,
)
async def list_documents(
    name: BaseName,
    request: Request,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DocumentPage:
    documents, total = await _stored(
        _knowledge(request).list_documents(name, offset=offset, limit=limit)
    )
    items = [DocumentOut.from_row(document) for document in documents]
    return DocumentPage(items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/knowledge-bases/{name}/documents/{document_id}",
    summary="One document",
    response_model=DocumentOut,
)
async def get_document(name: BaseName, document_id: str, request: Request) -> DocumentOut:
    return DocumentOut.from_row(await _stored(_knowledge(request).get_document(name, document_id)))


@router.delete(
    "/knowledge-bases/{name}/documents/{document_id}",
    summary="Delete a document and its chunks",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_document(name: BaseName, document_id: str, request: Request) -> None:
    if not await _stored(_knowledge(request).delete_document(name, document_id)):
        raise DocumentNotFound(f"no document {document_id!r} in {name!r}")


# Search.


@router.post(
    "/knowledge-bases/{name}/search",
    summary="What retrieval returns for a query (ranked chunks with scores)",
    response_model=SearchOut,
)
async def search(name: BaseName, body: SearchIn, request: Request) -> SearchOut:
    await _stored(_knowledge(request).get_base(name))  # 404 for an unknown base
    top_k = body.top_k or services(request).settings.retrieval_top_k
    chunks = await _retriever(request).retrieve([name], body.query, top_k=top_k)
    hits = [SearchHit.from_chunk(rank, chunk) for rank, chunk in enumerate(chunks, start=1)]
    return SearchOut(query=body.query, results=hits)
