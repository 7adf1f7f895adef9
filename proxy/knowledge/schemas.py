"""Request and response models of the knowledge admin API (and the CLI's JSON)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.db.models import Document
from proxy.knowledge.index import RetrievedChunk
from proxy.knowledge.repository import BaseSummary, as_utc

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024


class KnowledgeBaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    description: str | None = Field(default=None, max_length=4000)
    chunk_tokens: int = Field(default=200, ge=32, le=2000, description="Tokens per chunk.")
    chunk_overlap_tokens: int = Field(
        default=40, ge=0, le=1000, description="Tokens repeated from the previous chunk."
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> KnowledgeBaseCreate:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError("chunk_overlap_tokens must be below chunk_tokens")
        return self


class KnowledgeBaseUpdate(BaseModel):
    """What may change on a knowledge base: its description (``null`` clears it). The
    chunking stays as created: changing it would mean re-chunking every document."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(max_length=4000)

    @field_validator("description")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return value


class KnowledgeBaseOut(BaseModel):
    name: str
    description: str | None = None
    chunk_tokens: int
    chunk_overlap_tokens: int
    documents: int
    chunks: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_summary(cls, summary: BaseSummary) -> KnowledgeBaseOut:
        return cls.model_validate(summary, from_attributes=True)


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_id: str = Field(
        min_length=1, max_length=256, description="Your id for it; the same id replaces it."
    )
    content: str = Field(description="The document; base64 when encoding is base64 (PDF).")
    content_type: str = Field(
        default="text/plain",
        max_length=128,
        description="text/plain, text/markdown, text/html or application/pdf.",
    )
    encoding: Literal["text", "base64"] = "text"
    title: str | None = Field(default=None, max_length=512)
    url: str | None = Field(default=None, max_length=2048)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("content is empty")
        return value

    def payload(self) -> bytes | str:
        if self.encoding == "text":
            return self.content
        try:
            return base64.b64decode(self.content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("content is not valid base64") from exc


class DocumentOut(BaseModel):
    id: str
    knowledge_base: str
    source_id: str
    title: str | None = None
    url: str | None = None
    content_type: str
    content_hash: str
    chunk_count: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, document: Document) -> DocumentOut:
        out = cls.model_validate(document, from_attributes=True)
        out.created_at, out.updated_at = as_utc(out.created_at), as_utc(out.updated_at)
        return out


class DocumentPage(BaseModel):
    items: list[DocumentOut]
    total: int
    offset: int
    limit: int


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4000)
    top_k: int | None = Field(default=None, ge=1, le=50, description="Default: retrieval_top_k.")


class SearchHit(BaseModel):
    rank: int
    chunk_id: str
    document_id: str
    source_id: str
    title: str | None = None
    url: str | None = None
    text: str
    score: float
    tokens: int

    @classmethod
    def from_chunk(cls, rank: int, chunk: RetrievedChunk) -> SearchHit:
        return cls.model_validate({"rank": rank, **asdict(chunk)})


class SearchOut(BaseModel):
    query: str
    results: list[SearchHit] = Field(description="Best first.")
