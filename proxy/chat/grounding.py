"""Retrieval for a turn: the profile's knowledge, placed just before the new turn.

The query is the new user turn plus a little recent context from the request itself,
so retrieval runs at the same time as the history load instead of after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from proxy.context.assembly import split_request
from proxy.context.budget import TokenCounter
from proxy.context.matching import content_text
from proxy.knowledge.retrieval import Retriever, build_query, format_context, select_within_budget
from proxy.metrics import ProxyMetrics
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
