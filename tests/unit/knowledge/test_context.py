"""What reaches the prompt: the query for a turn, chunks within budget, the context block."""

from __future__ import annotations

from proxy.knowledge.context import CONTEXT_HEADER
from proxy.knowledge.index import RetrievedChunk
from proxy.knowledge.retrieval import build_query, format_context, select_within_budget


def chunk(text: str, tokens: int, title: str | None = "Doc", score: float = 1.0) -> RetrievedChunk:
    return RetrievedChunk("c", "kb", "d", "s", title, None, text, score, tokens)


def test_the_query_puts_the_new_turn_first_and_twice_then_recent_turns_newest_first():
    query = build_query(" and on Sundays? ", ["What are your hours?", "", "Where is the store?"])
    assert query.split("\n") == [
        "and on Sundays?",
        "and on Sundays?",
        "Where is the store?",
        "What are your hours?",
    ]
    assert build_query("", ["earlier"]) == "earlier"


def test_the_context_block_is_compact_and_numbered():
    block = format_context(
        [chunk("# Returns\nKeep the\n  receipt.", 5), chunk("退货需要小票。", 5, title=None)]
    )
    assert block == ("Relevant knowledge:\n[1] Doc: Returns: Keep the receipt.\n[2] 退货需要小票。")
    assert format_context([]) == ""


def test_selection_keeps_rank_order_and_skips_what_does_not_fit(counter):
    texts = [
        ("First chunk about returns. " * 8, "Returns"),
        ("Second, a much longer chunk about shipping. " * 30, "Shipping"),
        ("第三个关于会员积分的段落。" * 6, "会员积分"),
        ("Fourth chunk, short.", None),
    ]
    chunks = [chunk(text, counter.count_text(text), title) for text, title in texts]
    for budget in (60, 120, 200, 400, 2000):
        for selected in (
            select_within_budget(chunks, budget),
            select_within_budget(chunks, budget, counter=counter),
        ):
            assert [chunks.index(c) for c in selected] == sorted(chunks.index(c) for c in selected)
            if selected:
                assert counter.count_text(format_context(selected)) <= budget
    exact = select_within_budget(chunks, 200, counter=counter)
    assert [c.title for c in exact] == ["Returns", "会员积分", None]  # the long one is skipped
    assert select_within_budget(chunks, 5) == []


def test_the_header_is_counted(counter):
    one = chunk("Short text.", counter.count_text("Short text."))
    line_and_header = counter.count_text(format_context([one]))
    assert select_within_budget([one], line_and_header, counter=counter) == [one]
    assert select_within_budget([one], line_and_header - 1, counter=counter) == []
    assert format_context([one]).startswith(CONTEXT_HEADER)
