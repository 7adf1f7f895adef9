"""Sentence-aware chunking: sizes, overlap, languages, and that no text is ever lost."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.knowledge.chunking import chunk_spans, chunk_text, split_sentences

ENGLISH = (
    "Our store opens at nine. Returns are accepted within 30 days! Do you need a receipt? "
    "Yes, please keep it. Dr. Smith founded the company in 1990, e.g. before the web. "
    "Gift cards never expire. Shipping is free over $50. Express delivery costs $9.99 extra."
)
CHINESE = (
    "我们的门店每天早上九点开门。晚上十点关门！会员可以享受九折优惠吗？可以的；"
    "请出示会员卡。退货需要在三十天内办理……逾期不予受理。发票请妥善保存。"
)
JAPANESE = "「ありがとうございます。」と店員は言った。営業時間は十時からです！返品はできますか？"


def covers(text: str, spans: list[tuple[int, int]]) -> bool:
    """The chunks, minus what each repeats of the previous one, are the whole text."""
    rebuilt, end = [], 0
    for start, stop in spans:
        if start > end:
            return False  # a gap
        rebuilt.append(text[end:stop])
        end = max(end, stop)
    return "".join(rebuilt) == text


def test_sentences_split_on_european_and_cjk_enders():
    text = "Hello there. How are you?\n# Heading\n你好。谢谢！「はい。」そうです"
    pieces = [text[s:e] for s, e in split_sentences(text)]
    assert pieces == [
        "Hello there. ",
        "How are you?\n",
        "# Heading\n",
        "你好。",
        "谢谢！",
        "「はい。」",
        "そうです",
    ]


def test_abbreviations_initials_and_list_numbers_do_not_end_sentences():
    text = "Dr. Li met J. Smith, e.g. at noon. Then they left.\n1. First step\n2. Second step"
    pieces = [text[s:e].strip() for s, e in split_sentences(text)]
    assert pieces == [
        "Dr. Li met J. Smith, e.g. at noon.",
        "Then they left.",
        "1. First step",
        "2. Second step",
    ]


def test_english_chunks_hold_whole_sentences_within_the_limit(counter):
    chunks = chunk_text(ENGLISH, max_tokens=24, overlap_tokens=0, counter=counter)
    assert len(chunks) > 2
    for chunk in chunks:
        assert counter.count_text(chunk) <= 24
        assert chunk[-1] in ".!?", chunk
    assert " ".join(chunks) == ENGLISH


@pytest.mark.parametrize("text", [CHINESE, JAPANESE])
def test_cjk_chunks_end_at_sentence_enders(counter, text):
    chunks = chunk_text(text, max_tokens=20, overlap_tokens=0, counter=counter)
    assert len(chunks) > 1
    for chunk in chunks:
        assert counter.count_text(chunk) <= 20
        assert chunk[-1] in "。！？；…」", chunk
    assert "".join(chunks) == text


def test_overlap_repeats_trailing_sentences_within_the_overlap_budget(counter):
    chunks = chunk_text(ENGLISH, max_tokens=30, overlap_tokens=12, counter=counter)
    assert len(chunks) > 2
    repeated = 0
    for previous, current in itertools.pairwise(chunks):
        shared = next(
            (current[:i] for i in range(len(current), 0, -1) if previous.endswith(current[:i])),
            "",
        )
        if shared:
            repeated += 1
            assert counter.count_text(shared) <= 12
            assert shared[-1] in ".!?"  # whole sentences only
    assert repeated >= 1
    spans = chunk_spans(ENGLISH, max_tokens=30, overlap_tokens=12, counter=counter)
    assert covers(ENGLISH, spans)


def test_a_long_sentence_splits_at_clauses_then_by_tokens(counter):
    clauses = "，".join(f"第{i}条规定适用于所有门店和线上订单" for i in range(30)) + "。"
    words = " ".join(["supercalifragilistic"] * 200)  # no punctuation at all
    for text in (clauses, words):
        spans = chunk_spans(text, max_tokens=25, overlap_tokens=5, counter=counter)
        assert len(spans) > 3
        assert covers(text, spans)
        for start, end in spans:
            assert counter.count_text(text[start:end]) <= 25
    first = chunk_text(clauses, max_tokens=25, overlap_tokens=0, counter=counter)[0]
    assert first.endswith("，")  # cut at a clause, not inside one


def test_a_heading_goes_with_the_text_after_it(counter):
    text = "Intro sentence one is here. Intro sentence two is here.\n# Returns\nKeep the receipt."
    chunks = chunk_text(text, max_tokens=16, overlap_tokens=0, counter=counter)
    assert not any(chunk.endswith("# Returns") for chunk in chunks)
    assert any(chunk.startswith("# Returns") for chunk in chunks)


def test_whitespace_and_empty_text_give_no_chunks(counter):
    assert chunk_text("", counter=counter) == []
    assert chunk_text(" \n\n\t", counter=counter) == []


def test_invalid_sizes_are_refused(counter):
    with pytest.raises(ValueError):
        chunk_text("x", max_tokens=10, overlap_tokens=10, counter=counter)
    with pytest.raises(ValueError):
        chunk_text("x", max_tokens=0, overlap_tokens=0, counter=counter)


ALPHABET = st.sampled_from(
    [*list("abc xyz.!?,;:\n#。！？；，、「」…退货政策日本語テスト1"), "Dr. ", ". "]
)


@settings(max_examples=150, deadline=None)
@example(pieces=["a", ". ", "本", "Dr. ", "货"], max_tokens=8, overlap=0)  # 7 + 1 tokens join as 9
@given(
    pieces=st.lists(ALPHABET, max_size=400),
    max_tokens=st.integers(min_value=8, max_value=60),
    overlap=st.integers(min_value=0, max_value=7),
)
def test_no_text_is_ever_lost(counter, pieces, max_tokens, overlap):
    text = "".join(pieces)
    spans = chunk_spans(text, max_tokens=max_tokens, overlap_tokens=overlap, counter=counter)
    assert covers(text, spans)
    assert all(start < end for start, end in spans)
    assert all(a[0] < b[0] for a, b in itertools.pairwise(spans))  # progress
    for start, end in spans:
        assert counter.count_text(text[start:end]) <= max_tokens


def test_a_chunk_is_counted_as_joined_text(counter) -> None:
    # 'a. 本Dr. ' is 7 tokens and '货' 1, but together they are 9: two chunks, not one.
    text = "a. 本Dr. 货"
    spans = chunk_spans(text, max_tokens=8, overlap_tokens=0, counter=counter)
    assert spans == [(0, 8), (8, 9)]
    assert [counter.count_text(text[start:end]) for start, end in spans] == [7, 1]
