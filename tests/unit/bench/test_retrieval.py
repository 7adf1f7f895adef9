"""``proxy bench-retrieval`` runs end to end on tiny corpora (timings are not asserted)."""

from __future__ import annotations

from proxy.dev.bench.retrieval import build_corpus, main


def test_the_benchmark_prints_its_table(capsys):
    assert main(["--sizes", "200,400", "--queries", "30", "--dims", "16"]) == 0
    out = capsys.readouterr().out
    assert "bm25 p50/p99 ms" in out and "hybrid p50/p99" in out
    assert "     200 " in out and "     400 " in out


def test_the_corpus_is_seeded_and_mixes_languages():
    first, second = build_corpus(50, 10, seed=3), build_corpus(50, 10, seed=3)
    assert first == second
    text = " ".join(first.chunks)
    assert "。" in text and "." in text
