"""Reranking, for precision, and the one search pipeline (retrieve -> rerank -> personalize).

* :mod:`rerank.cross_encoder` - :class:`~rerank.cross_encoder.Reranker`, the BERT cross-encoder
  over (query, product) pairs, and its folder format.
* :mod:`rerank.blend` - the relevance blend of its logits with the first stage's scores.
* :mod:`rerank.pipeline` - :class:`~rerank.pipeline.SearchPipeline`, every stage in one call.

The public entry is ``from shopsearch import SearchPipeline``.
"""


# Deprecated: the names this package handed on before the front door (``from shopsearch import
# ...``) existed. Kept, with a DeprecationWarning, so that scripts written against shopsearch 0.1
# keep running for one release; tests/shopsearch/test_deprecated_imports.py checks each.
from typing import Any as _Any

_MOVED = {'SearchPipeline': 'rerank.pipeline', 'Reranker': 'rerank.cross_encoder', 'RankedHit': 'retrieval.hits'}


def __getattr__(name: str) -> _Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    import warnings

    warnings.warn(
        f"'from {__name__} import {name}' is deprecated: use 'from shopsearch import {name}'",
        DeprecationWarning,
        stacklevel=2,
    )
    value = getattr(importlib.import_module(_MOVED[name]), name)
    globals()[name] = value  # warned once: `from ... import` looks a name up twice
    return value
