"""The search's defaults that the command line shows: plain constants, nothing imported.

:mod:`rerank.pipeline` (and through it every caller) uses them; ``shopsearch --help`` reads them
from here without loading numpy or the models.
"""

from __future__ import annotations

#: Candidates retrieved and reranked per query by default (the benchmarks' depth); also the
#: candidates a reranker is trained and validated on, and a personal model learns over.
DEFAULT_RERANK_DEPTH = 50
