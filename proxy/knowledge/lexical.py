"""BM25 over chunks: an inverted index of numpy arrays, fast enough for the hot path.

Per term, the postings are two arrays, chunk slots (int32) and the BM25 term-frequency
part ``tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl))`` (float32), precomputed when
the segment is built and sorted by that weight, highest first. A query multiplies each
of its terms' weights by the term's idf (``ln(1 + (N - df + 0.5) / (df + 0.5))``, as
Lucene does) and adds them up per chunk with one ``np.bincount``; ``np.argpartition``
picks the top k. A very common term (a stopword nobody listed) could touch most of
the corpus for almost no score: only its ``max_postings_per_term`` highest-impact
postings are read, which bounds the cost of any query.

Changes go to small new segments (added chunks) and a live mask (removed chunks), so
re-ingesting a document costs about its own size; segments are merged with numpy
when there are too many, too many removed chunks, or the index is small anyway.
Between merges the statistics of a few added / removed chunks are slightly stale.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from proxy.knowledge.tokenize import tokenize

MAX_SEGMENTS = 4
SMALL_INDEX_POSTINGS = 20_000  # below this a merge costs about a millisecond: always merge
MAX_REMOVED_FRACTION = 0.2
MAX_TF = np.iinfo(np.uint16).max


@dataclass(slots=True)
class _Segment:
    offsets: npt.NDArray[np.int64]  # term id -> [offsets[t], offsets[t + 1]) postings
    slots: npt.NDArray[np.int32]
    weights: npt.NDArray[np.float32]
    tfs: npt.NDArray[np.uint16]  # kept to recompute weights when segments merge

    @property
    def terms(self) -> int:
        return len(self.offsets) - 1

    def nbytes(self) -> int:
        return self.offsets.nbytes + self.slots.nbytes + self.weights.nbytes + self.tfs.nbytes


class BM25Index:
    """Chunk ids -> BM25 scores for a query. Not thread-safe: one writer at a time."""

    def __init__(
        self,
        *,
        k1: float = 1.2,
        b: float = 0.75,
        tokenizer: Callable[[str], list[str]] = tokenize,
        max_postings_per_term: int = 20_000,
    ) -> None:
        self.k1, self.b = k1, b
        self.tokenizer = tokenizer
        self.max_postings_per_term = max_postings_per_term
        # Unknown terms get the next id on first use (queries only ever call ``get``).
        self._vocabulary: defaultdict[str, int] = defaultdict(itertools.count().__next__)
        self._ids: list[str | None] = []  # slot -> chunk id; None once removed
        self._slot_of: dict[str, int] = {}
        self._lengths = np.zeros(0, np.float32)  # slot -> terms in the chunk
        self._live = np.zeros(0, np.bool_)
        self._df = np.zeros(0, np.int64)  # term id -> chunks containing it (all slots)
        self._segments: list[_Segment] = []

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, str]], **options: float) -> BM25Index:
        index = cls(**options)  # type: ignore[arg-type]
        index.add(pairs)
        return index

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._slot_of

    @property
    def segments(self) -> int:
        return len(self._segments)

    def nbytes(self) -> int:
        """Approximate memory of the arrays (not the vocabulary and id maps)."""
        arrays = self._lengths.nbytes + self._live.nbytes + self._df.nbytes
        return arrays + sum(segment.nbytes() for segment in self._segments)

    # Changes.

    def add(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Index chunks; a chunk id already present is replaced."""
        pairs = list(pairs)
        self.remove([chunk_id for chunk_id, _ in pairs if chunk_id in self._slot_of])
        if not pairs:
            return
        vocabulary, tokenizer = self._vocabulary, self.tokenizer
        term_ids = [[vocabulary[term] for term in tokenizer(text)] for _, text in pairs]
        first = len(self._ids)
        for offset, (chunk_id, _) in enumerate(pairs):
            self._ids.append(chunk_id)
            self._slot_of[chunk_id] = first + offset
        lengths = np.fromiter((len(ids) for ids in term_ids), np.float32, count=len(pairs))
        self._lengths = np.concatenate([self._lengths, lengths])
        self._live = np.concatenate([self._live, np.ones(len(pairs), np.bool_)])
        terms = np.fromiter(itertools.chain.from_iterable(term_ids), np.int64)
        slots = np.repeat(
            np.arange(first, len(self._ids), dtype=np.int64), lengths.astype(np.int64)
        )
        segment = self._segment(terms, slots)
        self._count_terms(segment, +1)
        self._segments.append(segment)
        self._maybe_merge()

    def remove(self, chunk_ids: Iterable[str]) -> int:
        removed = 0
        for chunk_id in chunk_ids:
            slot = self._slot_of.pop(chunk_id, None)
            if slot is not None:
                self._ids[slot] = None
                self._live[slot] = False
                removed += 1
        if removed:
            self._maybe_merge()
        return removed

    def _segment(
        self,
        terms: npt.NDArray[np.int64],
        slots: npt.NDArray[np.int64],
        tfs: npt.NDArray[np.integer] | None = None,
    ) -> _Segment:
        """A segment from (term, slot) occurrences, or from (term, slot, tf) postings."""
        if tfs is None:  # occurrences: count them into postings
            keys, counts = np.unique(terms * len(self._ids) + slots, return_counts=True)
            terms, slots = np.divmod(keys, len(self._ids))
            tfs = np.minimum(counts, MAX_TF)
        tf = tfs.astype(np.float32)
        average = float(self._lengths.mean()) if len(self._lengths) else 1.0
        norm = self.k1 * (1 - self.b + self.b * self._lengths[slots] / max(average, 1e-9))
        weights = (tf * (self.k1 + 1) / (tf + norm)).astype(np.float32)
        order = np.lexsort((-weights, terms))
        offsets = np.zeros(len(self._vocabulary) + 1, np.int64)
        np.cumsum(np.bincount(terms, minlength=len(self._vocabulary)), out=offsets[1:])
        return _Segment(
            offsets, slots[order].astype(np.int32), weights[order], tfs[order].astype(np.uint16)
        )

    def _count_terms(self, segment: _Segment, sign: int) -> None:
        """Add (or take away) a segment's postings to the document frequencies."""
        if len(self._df) < len(self._vocabulary):
            grown = np.zeros(len(self._vocabulary), np.int64)
            grown[: len(self._df)] = self._df
            self._df = grown
        self._df[: segment.terms] += sign * np.diff(segment.offsets)

    @staticmethod
    def _postings(
        segments: list[_Segment],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.uint16]]:
        terms = [
            np.repeat(np.arange(s.terms, dtype=np.int64), np.diff(s.offsets)) for s in segments
        ]
        return (
            np.concatenate(terms),
            np.concatenate([s.slots for s in segments]),
            np.concatenate([s.tfs for s in segments]),
        )

    def _maybe_merge(self) -> None:
        postings = sum(len(segment.slots) for segment in self._segments)
        removed = len(self._ids) - len(self._slot_of)
        if removed > MAX_REMOVED_FRACTION * max(len(self._ids), 1) or (
            postings < SMALL_INDEX_POSTINGS and (len(self._segments) > 1 or removed)
        ):
            self.compact()
        elif len(self._segments) > MAX_SEGMENTS:
            # Merge the smallest segments (size-tiered: a posting is rewritten about
            # log(n) times); removed chunks' postings go, slot numbers stay.
            self._segments.sort(key=lambda segment: -len(segment.slots))
            merged = self._segments[MAX_SEGMENTS - 1 :]
            del self._segments[MAX_SEGMENTS - 1 :]
            terms, slots, tfs = self._postings(merged)
            for segment in merged:
                self._count_terms(segment, -1)
            keep = self._live[slots]
            segment = self._segment(terms[keep], slots[keep].astype(np.int64), tfs[keep])
            self._count_terms(segment, +1)
            self._segments.append(segment)

    def compact(self) -> None:
        """Merge all segments, drop removed chunks and make every statistic exact."""
        segments, self._segments = self._segments, []
        self._df = np.zeros(len(self._vocabulary), np.int64)
        live = self._live
        ids = [chunk_id for chunk_id in self._ids if chunk_id is not None]
        self._slot_of = {chunk_id: slot for slot, chunk_id in enumerate(ids)}
        self._ids = list[str | None](ids)
        self._lengths = self._lengths[live]
        self._live = np.ones(len(self._ids), np.bool_)
        if not segments or not self._ids:
            return
        terms, slots, tfs = self._postings(segments)
        keep = live[slots]
        renumber = np.cumsum(live, dtype=np.int64) - 1
        segment = self._segment(terms[keep], renumber[slots[keep]], tfs[keep])
        self._count_terms(segment, +1)
        self._segments.append(segment)

    # Queries.

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` best chunks as ``(chunk_id, score)``, best first; no match, no entry."""
        return self.search_terms(self.tokenizer(query), k)

    def search_terms(self, terms: list[str], k: int) -> list[tuple[str, float]]:
        if k <= 0 or not self._slot_of:
            return []
        total = len(self._ids)
        slot_lists, weight_lists = [], []
        for term, repeats in Counter(terms).items():
            term_id = self._vocabulary.get(term)
            if term_id is None:
                continue
            df = int(self._df[term_id])
            idf = math.log(1 + (total - df + 0.5) / (df + 0.5)) * repeats
            for segment in self._segments:
                if term_id >= segment.terms:
                    continue
                start, end = int(segment.offsets[term_id]), int(segment.offsets[term_id + 1])
                end = min(end, start + self.max_postings_per_term)
                if end > start:
                    slot_lists.append(segment.slots[start:end])
                    weight_lists.append(segment.weights[start:end] * np.float32(idf))
        if not slot_lists:
            return []
        scores = np.bincount(
            np.concatenate(slot_lists), weights=np.concatenate(weight_lists), minlength=total
        )
        if len(self._slot_of) < total:
            scores[~self._live] = 0.0
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > k:
            candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        candidates = np.sort(candidates)  # ties go to the chunk indexed first
        best = candidates[np.argsort(-scores[candidates], kind="stable")]
        ids = self._ids
        return [(ids[slot], float(scores[slot])) for slot in best]
