"""Reranking, for precision, and the one search pipeline (retrieve -> rerank -> personalize).

* :mod:`rerank.cross_encoder` - :class:`~rerank.cross_encoder.Reranker`, the BERT cross-encoder
  over (query, product) pairs, and its folder format.
* :mod:`rerank.blend` - the relevance blend of its logits with the first stage's scores.
* :mod:`rerank.pipeline` - :class:`~rerank.pipeline.SearchPipeline`, every stage in one call.

The public entry is ``from shopsearch import SearchPipeline``.
"""

from core.compat import moved_names

# Deprecated: the names this package handed on before the front door (``from shopsearch import
# ...``) existed, kept for one release (tests/shopsearch/test_deprecated_imports.py).
__getattr__ = moved_names(
    __name__,
    {
        "SearchPipeline": "rerank.pipeline",
        "Reranker": "rerank.cross_encoder",
        "RankedHit": "retrieval.hits",
    },
)
