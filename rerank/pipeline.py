"""Two-stage search: retrieve candidates for recall, rerank them for precision."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rerank.reranker import RankedHit, Reranker
from retrieval.filters import Filters
from retrieval.retriever import Hit, Retriever
from retrieval.store import Mode


class SearchPipeline:
    """Retriever (stage 1) + optional cross-encoder (stage 2).

    Args:
        retriever: An open :class:`retrieval.Retriever`.
        reranker: A loaded :class:`rerank.Reranker`, or None for retrieval-only ranking.
    """

    def __init__(self, retriever: Retriever, reranker: Reranker | None = None) -> None:
        self.retriever = retriever
        self.reranker = reranker

    @classmethod
    def open(
        cls,
        index: str | os.PathLike[str] | None = None,
        *,
        reranker: str | os.PathLike[str] | None = None,
        device: str | None = None,
        **retriever_options: Any,
    ) -> SearchPipeline:
        """Opens an index (see ``Retriever.open``) and loads a reranker folder if given."""
        retriever = Retriever.open(index, device=device, **retriever_options)
        model = Reranker.load(reranker, device=device) if reranker is not None else None
        return cls(retriever, model)

    def search(
        self,
        query: str,
        k: int = 10,
        candidates: int = 50,
        filters: Filters | dict | None = None,
        mode: Mode | None = None,
    ) -> list[RankedHit] | list[Hit]:
        """Top ``k`` products: ``candidates`` retrieved, then reranked (when a reranker is loaded)."""
        hits = self.retriever.search(query, k=max(k, candidates), filters=filters, mode=mode)
        if self.reranker is None:
            return hits[:k]
        return self.reranker.rank(query, hits, top_k=k)

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        candidates: int = 50,
        filters: Filters | dict | None = None,
        mode: Mode | None = None,
    ) -> list[list[RankedHit] | list[Hit]]:
        """:meth:`search` for several queries (one retrieval batch)."""
        batches = self.retriever.search_batch(
            queries, k=max(k, candidates), filters=filters, mode=mode
        )
        if self.reranker is None:
            return [hits[:k] for hits in batches]
        return [
            self.reranker.rank(q, hits, top_k=k) for q, hits in zip(queries, batches, strict=True)
        ]

    def close(self) -> None:
        """Releases the index."""
        self.retriever.close()

    def __enter__(self) -> SearchPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
