"""Retrieval, for recall: the bi-encoder, the Qdrant product store and query-time search.

``from retrieval import Retriever`` is the entry point; names load lazily so that light users
(filters, the lexical tokenizer) don't pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrieval.encoder import BiEncoder
    from retrieval.filters import Filters
    from retrieval.hits import Hits, QueryCorrection, RankedHit
    from retrieval.retriever import Retriever
    from retrieval.store import IndexLocation

_EXPORTS = {
    "BiEncoder": "retrieval.encoder",
    "Filters": "retrieval.filters",
    "RankedHit": "retrieval.hits",
    "Hits": "retrieval.hits",
    "QueryCorrection": "retrieval.hits",
    "Retriever": "retrieval.retriever",
    "IndexLocation": "retrieval.store",
}
__all__ = [
    "BiEncoder",
    "Filters",
    "Hits",
    "IndexLocation",
    "QueryCorrection",
    "RankedHit",
    "Retriever",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
