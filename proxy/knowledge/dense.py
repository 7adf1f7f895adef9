"""Dense retrieval: embeddings from an OpenAI-compatible endpoint, cosine top-k in numpy.

Embeddings are fetched at ingestion (every chunk) and once per query, never otherwise.
The index is one float32 matrix of L2-normalised rows, so cosine similarity is one
matrix-vector product; removed rows are masked and reclaimed by ``compact``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from proxy.settings import Settings

Vector = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.floating[Any]]
MAX_REMOVED_FRACTION = 0.25
EMBEDDING_TIMEOUT_SECONDS = 30.0  # ingestion batches; queries have their own deadline


class Embedder(Protocol):
    """What the knowledge layer needs from an embeddings provider."""

    model: str

    async def embed_query(self, text: str) -> list[float]: ...

    async def embed_documents(self, texts: list[str]) -> list[list[float]]: ...


class OpenAIEmbedder:
    """``langchain_openai.OpenAIEmbeddings`` against ``settings.embeddings_base_url``."""

    def __init__(self, settings: Settings) -> None:
        from langchain_openai import OpenAIEmbeddings  # deferred: a heavy import

        key = settings.embeddings_api_key
        self.model = settings.embeddings_model
        self._client = OpenAIEmbeddings(
            base_url=settings.embeddings_base_url,
            # Local servers need no key, but the OpenAI client refuses an empty one.
            api_key=key.get_secret_value() if key else "unused",  # type: ignore[arg-type]
            model=settings.embeddings_model,
            # True would tokenize with tiktoken's model files (a download) and split
            # long texts; our chunks are short and must embed as they are.
            check_embedding_ctx_length=False,
            timeout=EMBEDDING_TIMEOUT_SECONDS,
            max_retries=2,
        )

    async def embed_query(self, text: str) -> list[float]:
        return await self._client.aembed_query(text)

    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return await self._client.aembed_documents(texts)


def normalised(
    vectors: Sequence[Sequence[float]] | Sequence[float] | FloatArray,
) -> Vector:
    """Rows scaled to unit length (all-zero rows stay zero)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class DenseIndex:
    """Chunk ids -> unit vectors of one dimension; cosine top-k."""

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._matrix = np.zeros((0, dimensions), np.float32)
        self._rows = 0  # used rows of ``_matrix`` (it grows by doubling)
        self._ids: list[str | None] = []
        self._row_of: dict[str, int] = {}
        self._live = np.zeros(0, np.bool_)

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._row_of

    def nbytes(self) -> int:
        return self._matrix.nbytes + self._live.nbytes

    def add(
        self, chunk_ids: Sequence[str], vectors: Sequence[Sequence[float]] | FloatArray
    ) -> None:
        """Add (or replace) chunks; every vector must have ``dimensions`` values."""
        if not chunk_ids:
            return
        matrix = normalised(vectors)
        if matrix.shape != (len(chunk_ids), self.dimensions):
            raise ValueError(
                f"expected {len(chunk_ids)} vectors of {self.dimensions} dimensions, "
                f"got shape {matrix.shape}"
            )
        self.remove([chunk_id for chunk_id in chunk_ids if chunk_id in self._row_of])
        needed = self._rows + len(chunk_ids)
        if needed > len(self._matrix):
            grown = np.zeros((max(needed, 2 * len(self._matrix), 64), self.dimensions), np.float32)
            grown[: self._rows] = self._matrix[: self._rows]
            self._matrix = grown
            live = np.zeros(len(grown), np.bool_)
            live[: self._rows] = self._live[: self._rows]
            self._live = live
        self._matrix[self._rows : needed] = matrix
        self._live[self._rows : needed] = True
        for offset, chunk_id in enumerate(chunk_ids):
            self._ids.append(chunk_id)
            self._row_of[chunk_id] = self._rows + offset
        self._rows = needed

    def remove(self, chunk_ids: Iterable[str]) -> int:
        removed = 0
        for chunk_id in chunk_ids:
            row = self._row_of.pop(chunk_id, None)
            if row is not None:
                self._ids[row] = None
                self._live[row] = False
                removed += 1
        if removed and self._rows - len(self._row_of) > MAX_REMOVED_FRACTION * self._rows:
            self.compact()
        return removed

    def compact(self) -> None:
        live = self._live[: self._rows]
        self._matrix = np.ascontiguousarray(self._matrix[: self._rows][live])
        ids = [chunk_id for chunk_id in self._ids if chunk_id is not None]
        self._row_of = {chunk_id: row for row, chunk_id in enumerate(ids)}
        self._ids = list[str | None](ids)
        self._rows = len(self._ids)
        self._live = np.ones(self._rows, np.bool_)

    def search(self, vector: Sequence[float] | FloatArray, k: int) -> list[tuple[str, float]]:
        """The ``k`` most similar chunks as ``(chunk_id, cosine)``, best first."""
        if k <= 0 or not self._row_of:
            return []
        query = normalised(vector)[0]
        if query.shape[0] != self.dimensions:
            raise ValueError(f"query has {query.shape[0]} dimensions, the index {self.dimensions}")
        scores = self._matrix[: self._rows] @ query
        if len(self._row_of) < self._rows:
            scores[~self._live[: self._rows]] = -np.inf
        k = min(k, len(self._row_of))
        best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        best = best[np.argsort(-scores[best], kind="stable")]
        ids = self._ids
        return [(ids[row], float(scores[row])) for row in best if np.isfinite(scores[row])]
