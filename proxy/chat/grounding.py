"""Retrieval for a turn: the profile's knowledge, placed just before the new turn.

The query is the new user turn plus a little recent context from the request itself,
so retrieval runs at the same time as the history load instead of after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from proxy.context.assembly import split_request
from proxy.context.budget import RETRIEVAL_SOURCE, TokenCounter
from proxy.context.history import StoredMessage
from proxy.context.matching import content_text
from proxy.knowledge.context import CONTEXT_HEADER
from proxy.knowledge.retrieval import Retriever, build_query, format_context, select_within_budget
from proxy.metrics import ProxyMetrics
from proxy.observability import tracing
from proxy.settings import Settings


@dataclass(slots=True)
class Grounding:
    context: str
    sources: list[dict[str, Any]]


async def retrieve_for_turn(
    retriever: Retriever,
    knowledge_bases: list[str],
    messages: list[dict[str, Any]],
    settings: Settings,
    counter: TokenCounter,
    metrics: ProxyMetrics,
) -> Grounding | None:
    users = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    if not users or not users[-1].strip():
        return None
    recent = users[-1 - settings.retrieval_context_turns : -1][::-1]
    started = time.perf_counter()
    with tracing.child("proxy.retrieval", {"proxy.knowledge_bases": ",".join(knowledge_bases)}):
        chunks = await retriever.retrieve(
            knowledge_bases, build_query(users[-1], recent), top_k=settings.retrieval_top_k
        )
    chunks = select_within_budget(chunks, settings.retrieval_token_budget, counter=counter)
    metrics.retrieval_time.observe(time.perf_counter() - started)
    if not chunks:
        return None
    sources = [
        {
            "title": c.title,
            "source_id": c.source_id,
            "url": c.url,
            "knowledge_base": c.knowledge_base,
            "score": round(float(c.score), 4),
        }
        for c in chunks
    ]
    return Grounding(context=format_context(chunks), sources=sources)


def ground(
    messages: list[dict[str, Any]],
    context: str,
    new_turn: list[StoredMessage] | None,
    request_id: str | None,
) -> list[dict[str, Any]]:
    """The prompt with this turn's knowledge, kept with its turn for the next requests.

    Only chunks the prompt does not already hold (from the turns in the window) are
    added: consecutive turns about one topic retrieve the same chunks. For a task
    (``new_turn`` is the turn to be stored) the block is stored just before the user's
    message, so the next request repeats it in place and extends this prompt instead of
    replacing its tail (upstream prompt caches serve only an unchanged prefix)."""
    block = _new_knowledge(messages, context)
    if block is None:
        return messages
    if new_turn and new_turn[0].role == "user":
        stored = StoredMessage(
            role="system", content=block, request_id=request_id, source=RETRIEVAL_SOURCE
        )
        new_turn.insert(0, stored)
    return inject(messages, block)


def _new_knowledge(messages: list[dict[str, Any]], context: str) -> str | None:
    header, _, body = context.partition("\n")
    if header != CONTEXT_HEADER:
        return context
    held = {
        _chunk_text(line)
        for m in messages
        if m.get("role") == "system"
        and isinstance(m.get("content"), str)
        and m["content"].startswith(CONTEXT_HEADER)
        for line in m["content"].split("\n")[1:]
    }
    lines = [line for line in body.split("\n") if line and _chunk_text(line) not in held]
    return "\n".join([CONTEXT_HEADER, *lines]) if lines else None


def _chunk_text(line: str) -> str:
    """A chunk's line without its rank ("[2] "): the same chunk ranks differently."""
    if line.startswith("["):
        closing = line.find("] ")
        if closing > 0:
            return line[closing + 2 :]
    return line


def inject(messages: list[dict[str, Any]], context: str) -> list[dict[str, Any]]:
    """The context as a system message after the history, just before the new turn.

    Not in the leading system message: that would change the prompt's prefix on every
    turn, and upstream prompt caches (OpenAI, DeepSeek, Anthropic, vLLM, SGLang) serve
    only an unchanged prefix. A new turn of tool results keeps its place right after
    its assistant message, so the context then goes last."""
    new_turn = split_request(messages).new_turn
    at = len(messages) - len(new_turn) if new_turn and new_turn[0].get("role") == "user" else None
    block = {"role": "system", "content": context}
    if at is None:
        return [*messages, block]
    return [*messages[:at], block, *messages[at:]]
