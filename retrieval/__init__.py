"""Retrieval, for recall: the bi-encoder, BM25, the Qdrant product store and query-time search.

* :mod:`retrieval.retriever` - :class:`~retrieval.retriever.Retriever`, the first stage.
* :mod:`retrieval.encoder` - the bi-encoder (query and product towers).
* :mod:`retrieval.lexical` - the BM25 tokenizer; :mod:`retrieval.spelling` - typo correction.
* :mod:`retrieval.filters` - :class:`~retrieval.filters.Filters`; :mod:`retrieval.hits` - the
  one hit type.
* :mod:`retrieval.store` - the store, embedded (``qdrant-edge-py``) or a Qdrant server.

The public entry is ``from shopsearch import SearchPipeline``.
"""

from core.compat import moved_names

# Deprecated: the names this package handed on before the front door (``from shopsearch import
# ...``) existed, kept for one release (tests/shopsearch/test_deprecated_imports.py).
__getattr__ = moved_names(
    __name__,
    {
        "Retriever": "retrieval.retriever",
        "Filters": "retrieval.filters",
        "RankedHit": "retrieval.hits",
        "Hits": "retrieval.hits",
        "QueryCorrection": "retrieval.hits",
    },
)
