"""``proxy bench-retrieval``: in-memory retrieval latency at 1k, 10k and 100k chunks.

Synthetic corpora (seeded): chunks of three to six sentences, English or Chinese,
drawn from a fixed vocabulary with Zipf-like word frequencies (about 100 tokens per
chunk). Queries are a few words of a random chunk plus a random common word, mixed
languages included. Measured per corpus, after a warm-up, over ``--queries`` queries:

* ``bm25``: ``BM25Index.search`` for 20 candidates (what one base contributes);
* ``retrieve``: ``Retriever.retrieve(top_k=3)``, lexical only (tokenize, search, results);
* ``dense``: ``DenseIndex.search`` over random unit vectors of ``--dims`` dimensions;
* ``hybrid``: ``retrieve`` with an in-process embedder (no network) and RRF fusion.

Build time covers tokenizing and indexing every chunk; memory is the index arrays.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from proxy.db.base import utcnow
from proxy.knowledge.dense import DenseIndex
from proxy.knowledge.index import ChunkRecord, DocumentInfo
from proxy.knowledge.retrieval import Retriever

ENGLISH_STEMS = (
    "return refund order ship deliver store open close price card cash receipt member "
    "point coupon discount size color stock warranty repair exchange account password "
    "phone email address city station parking hour week month day morning evening "
    "coffee tea milk bread cake fruit shirt shoe bag watch battery charger screen"
)
CHINESE_CHARACTERS = (
    "退货换款订单发送门店营业时间价格会员积分优惠券折扣尺码颜色库存保修维修账户密码"
    "手机邮箱地址城市车站停车早上晚上咖啡茶牛奶面包蛋糕水果衬衫鞋包手表电池充电屏幕"
    "服务客户快递包装免费支付银行发票周末节日新品活动预约取消查询电话网站地铁商场"
)


def _vocabulary(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "sho", "ve", "di", "pa", "zen", "qu"]
    english = ENGLISH_STEMS.split()
    while len(english) < 5000:
        english.append("".join(rng.choice(syllables, size=int(rng.integers(2, 5)))))
    chars = list(CHINESE_CHARACTERS)
    chinese = sorted({"".join(rng.choice(chars, size=2)) for _ in range(4000)})
    return english, chinese


def _zipf_sampler(rng: np.random.Generator, words: list[str]) -> Callable[[int], list[str]]:
    """Draws words with probability proportional to 1 / rank."""
    cumulative = np.cumsum(1.0 / np.arange(1, len(words) + 1))
    cumulative /= cumulative[-1]

    def draw(count: int) -> list[str]:
        picks = np.searchsorted(cumulative, rng.random(count))
        return [words[int(i)] for i in np.minimum(picks, len(words) - 1)]

    return draw


@dataclass(slots=True)
class Corpus:
    chunks: list[str]
    queries: list[str]


def build_corpus(size: int, queries: int, seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    english, chinese = _vocabulary(rng)
    draw_english, draw_chinese = _zipf_sampler(rng, english), _zipf_sampler(rng, chinese)

    def sentence() -> str:
        if rng.random() < 0.5:
            return " ".join(draw_english(int(rng.integers(8, 17)))).capitalize() + "."
        return "".join(draw_chinese(int(rng.integers(6, 13)))) + "。"

    chunks = [" ".join(sentence() for _ in range(int(rng.integers(3, 7)))) for _ in range(size)]
    asked = []
    for _ in range(queries):
        source = chunks[int(rng.integers(size))].replace("。", " ").replace(".", " ").split()
        picked = rng.choice(source, size=min(len(source), int(rng.integers(2, 5))), replace=False)
        common = rng.choice(english[:50]) if rng.random() < 0.5 else rng.choice(chinese[:50])
        words = [w if w.isascii() else w[: int(rng.integers(2, 7))] for w in map(str, picked)]
        asked.append(" ".join([*words, str(common)]))
    return Corpus(chunks, asked)


class SyntheticEmbedder:
    """Deterministic random unit vectors, in process: measures fusion, not a network."""

    model = "synthetic"

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions

    def _vector(self, text: str) -> list[float]:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        vector = np.random.default_rng(seed).standard_normal(self.dimensions)
        return list(vector / np.linalg.norm(vector))

    async def embed_query(self, text: str) -> list[float]:
        return self._vector(text)

    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(text) for text in texts]


def _percentiles(samples: Sequence[float]) -> Latency:
    values = np.asarray(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def _timed(call: Callable[[str], object], queries: list[str]) -> Latency:
    for query in queries[:20]:
        call(query)  # warm-up
    samples = []
    for query in queries:
        started = time.perf_counter()
        call(query)
        samples.append(time.perf_counter() - started)
    return _percentiles(samples)


Latency = tuple[float, float]  # p50, p99 in milliseconds


@dataclass(slots=True)
class Result:
    chunks: int
    build_s: float
    bm25_mb: float
    dense_build_s: float
    dense_mb: float
    bm25: Latency
    retrieve: Latency
    dense: Latency
    hybrid: Latency


def run_size(size: int, queries: int, dims: int, seed: int) -> Result:
    corpus = build_corpus(size, queries, seed)
    document = DocumentInfo("doc", "synthetic", "Synthetic corpus", None)
    records = [
        ChunkRecord(f"c{i}", "doc", i, text, len(text) // 3) for i, text in enumerate(corpus.chunks)
    ]
    retriever = Retriever()
    now = utcnow()
    retriever.put_base("bench", now)
    started = time.perf_counter()
    retriever.put_document("bench", document, records, previous=now, version=now)
    build_seconds = time.perf_counter() - started
    index = retriever.base("bench")
    assert index is not None
    loop = asyncio.new_event_loop()
    try:

        def retrieve(query: str) -> object:
            return loop.run_until_complete(retriever.retrieve(["bench"], query, top_k=3))

        bm25 = _timed(lambda query: index.lexical.search(query, 20), corpus.queries)
        lexical = _timed(retrieve, corpus.queries)
        rng = np.random.default_rng(seed + 1)
        dense = DenseIndex(dims)
        started = time.perf_counter()
        dense.add([record.id for record in records], rng.standard_normal((size, dims)))
        dense_build = time.perf_counter() - started
        vectors = {query: rng.standard_normal(dims) for query in corpus.queries}
        dense_latency = _timed(lambda query: dense.search(vectors[query], 20), corpus.queries)
        index.dense = dense
        retriever.embedder = SyntheticEmbedder(dims)
        hybrid = _timed(retrieve, corpus.queries)
    finally:
        loop.close()
    return Result(
        chunks=size,
        build_s=build_seconds,
        bm25_mb=index.lexical.nbytes() / 1e6,
        dense_build_s=dense_build,
        dense_mb=dense.nbytes() / 1e6,
        bm25=bm25,
        retrieve=lexical,
        dense=dense_latency,
        hybrid=hybrid,
    )


def render(rows: list[Result]) -> str:
    header = (
        f"{'chunks':>8} {'build s':>8} {'bm25 MB':>8} {'bm25 p50/p99 ms':>16} "
        f"{'retrieve p50/p99':>17} {'dense MB':>9} {'dense p50/p99':>14} {'hybrid p50/p99':>15}"
    )
    lines = [header, "-" * len(header)]

    def pair(value: Latency) -> str:
        return f"{value[0]:.2f} / {value[1]:.2f}"

    for row in rows:
        lines.append(
            f"{row.chunks:>8} {row.build_s:>8.2f} {row.bm25_mb:>8.1f} "
            f"{pair(row.bm25):>16} {pair(row.retrieve):>17} {row.dense_mb:>9.1f} "
            f"{pair(row.dense):>14} {pair(row.hybrid):>15}"
        )
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    values = [int(item) for item in text.split(",") if item.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers separated by commas")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="proxy bench-retrieval", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--sizes", type=_sizes, default=[1_000, 10_000, 100_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rows: list[Result] = []
    for size in args.sizes:
        rows.append(run_size(size, args.queries, args.dims, args.seed))
        print(f"{size} chunks done", flush=True)
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
