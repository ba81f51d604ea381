"""shopsearch: personalized e-commerce product search.

The front door; everything a user needs imports from here::

    from shopsearch import SearchPipeline

    with SearchPipeline.open("./idx") as pipe:
        hits = pipe.search("cordless drill", k=10, filters={"max_price": 150})

Names load on first use (PEP 562), so ``import shopsearch`` (and the CLI's ``--help``) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analytics.suggest import Suggester, Suggestion
    from core.errors import ShopsearchError
    from indexer.build import IndexSummary, index_catalog
    from personalization.ingest import open_profiles
    from rerank.cross_encoder import Reranker
    from rerank.pipeline import SearchPipeline
    from retrieval.filters import Filters
    from retrieval.hits import Hits, QueryCorrection, RankedHit
    from retrieval.retriever import Retriever

__version__ = "0.1.0"

_EXPORTS = {
    "SearchPipeline": "rerank.pipeline",
    "Retriever": "retrieval.retriever",
    "Reranker": "rerank.cross_encoder",
    "RankedHit": "retrieval.hits",
    "Hits": "retrieval.hits",
    "QueryCorrection": "retrieval.hits",
    "Filters": "retrieval.filters",
    "ShopsearchError": "core.errors",
    "index_catalog": "indexer.build",
    "IndexSummary": "indexer.build",
    "open_profiles": "personalization.ingest",
    "Suggester": "analytics.suggest",
    "Suggestion": "analytics.suggest",
}
__all__ = [
    "Filters",
    "Hits",
    "IndexSummary",
    "QueryCorrection",
    "RankedHit",
    "Reranker",
    "Retriever",
    "SearchPipeline",
    "ShopsearchError",
    "Suggester",
    "Suggestion",
    "index_catalog",
    "open_profiles",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'shopsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
