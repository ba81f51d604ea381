"""Reranking, for precision: a BERT cross-encoder over retrieved candidates, and the one search
pipeline (retrieve -> rerank -> personalize).

``from rerank import Reranker, SearchPipeline``; names load lazily (torch is heavy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rerank.pipeline import SearchPipeline
    from rerank.reranker import Reranker
    from retrieval.hits import RankedHit

_EXPORTS = {
    "RankedHit": "retrieval.hits",
    "Reranker": "rerank.reranker",
    "SearchPipeline": "rerank.pipeline",
}
__all__ = ["RankedHit", "Reranker", "SearchPipeline"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rerank' has no attribute {name!r}")
