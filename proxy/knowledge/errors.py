"""Failures of the knowledge layer, as ``ProxyError``s (each carries its HTTP status)."""

from __future__ import annotations

from proxy.errors import Conflict, InvalidRequest, NotFound, ProxyError


class KnowledgeBaseNotFound(NotFound):
    pass


class DocumentNotFound(NotFound):
    pass


class KnowledgeBaseExists(Conflict):
    pass


class InvalidDocument(InvalidRequest):
    """Content the proxy cannot use: an unsupported type, no text, bad encoding."""

    status = 422
    code = "invalid_document"


class EmbeddingFailed(ProxyError):
    """The embeddings endpoint failed while ingesting; nothing was stored."""

    status = 502
    error_type = "server_error"
    code = "embedding_failed"
