"""Retrieval, for recall: the bi-encoder, BM25, the Qdrant product store and query-time search.

* :mod:`retrieval.retriever` - :class:`~retrieval.retriever.Retriever`, the first stage.
* :mod:`retrieval.encoder` - the bi-encoder (query and product towers).
* :mod:`retrieval.lexical` - the BM25 tokenizer; :mod:`retrieval.spelling` - typo correction.
* :mod:`retrieval.filters` - :class:`~retrieval.filters.Filters`; :mod:`retrieval.hits` - the
  one hit type.
* :mod:`retrieval.store` - the store, embedded (``qdrant-edge-py``) or a Qdrant server.

The public entry is ``from shopsearch import SearchPipeline``.
"""


# Deprecated: the names this package handed on before the front door (``from shopsearch import
# ...``) existed. Kept, with a DeprecationWarning, so that scripts written against shopsearch 0.1
# keep running for one release; tests/shopsearch/test_deprecated_imports.py checks each.
from typing import Any as _Any

_MOVED = {'Retriever': 'retrieval.retriever', 'Filters': 'retrieval.filters', 'RankedHit': 'retrieval.hits', 'Hits': 'retrieval.hits', 'QueryCorrection': 'retrieval.hits'}


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
